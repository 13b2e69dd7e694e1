#!/bin/bash
# Side-by-side: `aegis scan` against picklescan, ModelScan and fickling on a corpus made by
# bench/make_scan_corpus.py. The peers run from source exactly as /work/shared/peers/scanner_run_tools.sh
# runs them (see /work/shared/peers/README.md); this script only calls that script.
#
#   bench/compare_scanners.sh CORPUS            prints a Markdown report, keeps raw outputs in $WORK
#
# Environment: AEGIS (default build/aegis), TOOLS (default "aegis picklescan modelscan fickling"),
# TIMEOUT per whole-corpus or big-file run (1800 s), FILE_TIMEOUT per small file (120 s),
# JOBS parallel per-file peer runs (1), WORK output folder (a new /tmp/aegis_compare.*),
# SKIP_CORPUS_TIMING=1 / SKIP_BIG=1 / SKIP_VERDICTS=1 to leave a phase out.
set -u -o pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 CORPUS   (a folder made by bench/make_scan_corpus.py)" >&2
    exit 2
fi
CORPUS=$(realpath "$1")
HERE=$(dirname "$(realpath "$0")")
ROOT=$(dirname "$HERE")
AEGIS=${AEGIS:-$ROOT/build/aegis}
PEERS_DIR=${PEERS_DIR:-/work/shared/peers}
RUN_TOOLS=$PEERS_DIR/scanner_run_tools.sh
TOOLS=${TOOLS:-"aegis picklescan modelscan fickling"}
TIMEOUT=${TIMEOUT:-1800}
FILE_TIMEOUT=${FILE_TIMEOUT:-120}
JOBS=${JOBS:-1}
WORK=${WORK:-$(mktemp -d /tmp/aegis_compare.XXXXXX)}
WORK=$(realpath -m "$WORK")
mkdir -p "$WORK"/cwd "$WORK"/files "$WORK"/big

for need in /usr/bin/time /usr/bin/python3 "$RUN_TOOLS"; do
    [ -e "$need" ] || { echo "missing $need (see $PEERS_DIR/README.md)" >&2; exit 2; }
done
selected=""
for t in $TOOLS; do
    case $t in
        aegis) [ -x "$AEGIS" ] || { echo "note: $AEGIS not built - aegis left out (set AEGIS=...)" >&2; continue; };;
        picklescan) src=/tmp/src/mmaitre314+picklescan;;
        modelscan) src=/tmp/src/protectai+modelscan;;
        fickling) src=/tmp/src/trailofbits+fickling
                  [ -f /tmp/shims/typing_extensions.py ] || { echo "fickling needs /tmp/shims/typing_extensions.py (see peers README)" >&2; continue; };;
        *) echo "unknown tool $t" >&2; exit 2;;
    esac
    if [ "$t" != aegis ] && [ ! -d "$src" ]; then echo "note: $src missing - $t left out (see bench/README.md)" >&2; continue; fi
    selected="$selected $t"
done
TOOLS=$selected
echo "compare_scanners: corpus $CORPUS, tools:$TOOLS, raw outputs in $WORK" >&2
printf '%s\n' $TOOLS > "$WORK/tools.txt"
echo "$CORPUS" > "$WORK/corpus.txt"

# One command line per tool for a path (file or folder). fickling has no folder mode: it is run once
# per file, which counts one interpreter start per file against it (noted in the report).
tool_cmd() {  # tool path -> prints nothing, runs the tool
    local tool=$1 path=$2
    case $tool in
        aegis) "$AEGIS" scan --format json --quiet "$path";;
        picklescan|modelscan) "$RUN_TOOLS" "$tool" "$path";;
        fickling)
            if [ -d "$path" ]; then
                find "$path" -type f | sort | while IFS= read -r f; do "$RUN_TOOLS" fickling-api "$f"; done
            else
                "$RUN_TOOLS" fickling-api "$path"
            fi;;
    esac
}
export -f tool_cmd
export AEGIS RUN_TOOLS

timed() {  # tag tool path timeout: /usr/bin/time -v around tool_cmd, outputs under $WORK/<tag>.*
    local tag=$1 tool=$2 path=$3 limit=$4
    find "$path" -type f -exec cat {} + > /dev/null 2>&1   # same warm page cache for every tool
    (cd "$WORK/cwd" && /usr/bin/time -v -o "$WORK/$tag.time" timeout "$limit" bash -c 'tool_cmd "$@"' _ "$tool" "$path" \
        > "$WORK/$tag.out" 2> "$WORK/$tag.err")
    echo $? > "$WORK/$tag.rc"
}

# 1. The whole corpus, one run per tool and top-level folder (benign, big, malicious, malformed):
#    a tool that aborts on one hostile file then loses only that folder, and the report says so.
if [ "${SKIP_CORPUS_TIMING:-0}" != 1 ]; then
    (cd "$CORPUS" && find . -mindepth 1 -maxdepth 1 -type d ! -name '.*' | sed 's|^\./||' | sort) > "$WORK/parts.txt"
    if [[ " $TOOLS " == *" aegis "* ]]; then   # and aegis once over everything, as a user runs it
        echo "compare_scanners: aegis on the whole corpus (timeout ${TIMEOUT}s)" >&2
        timed "whole.aegis" aegis "$CORPUS" "$TIMEOUT"
    fi
    for t in $TOOLS; do
        while IFS= read -r part; do
            echo "compare_scanners: $t on $part/ (timeout ${TIMEOUT}s)" >&2
            timed "corpus.$t.$part" "$t" "$CORPUS/$part" "$TIMEOUT"
        done < "$WORK/parts.txt"
    done
fi

# 2. Each big file alone, every tool
if [ "${SKIP_BIG:-0}" != 1 ] && [ -d "$CORPUS/big" ]; then
    (cd "$CORPUS" && find big -type f | sort) > "$WORK/big/list.txt"
    i=0
    while IFS= read -r rel; do
        for t in $TOOLS; do
            echo "compare_scanners: $t on $rel" >&2
            timed "big/$i.$t" "$t" "$CORPUS/$rel" "$TIMEOUT"
        done
        i=$((i + 1))
    done < "$WORK/big/list.txt"
fi

# 3. Verdict per small file for each peer (aegis's come from its whole-corpus JSON)
verdict_one() {  # tool index relpath
    local tool=$1 idx=$2 rel=$3
    (cd "$WORK/cwd" && timeout "$FILE_TIMEOUT" bash -c 'tool_cmd "$@"' _ "$tool" "$CORPUS/$rel" \
        > "$WORK/files/$tool/$idx.out" 2>&1)
    echo $? > "$WORK/files/$tool/$idx.rc"
}
export -f verdict_one
export WORK CORPUS FILE_TIMEOUT
if [ "${SKIP_VERDICTS:-0}" != 1 ]; then
    (cd "$CORPUS" && find . -path ./big -prune -o -type f ! -name manifest.json -print | sed 's|^\./||' | sort) > "$WORK/files/list.txt"
    for t in $TOOLS; do
        [ "$t" = aegis ] && continue
        mkdir -p "$WORK/files/$t"
        echo "compare_scanners: $t verdicts on $(wc -l < "$WORK/files/list.txt") files" >&2
        i=0
        while IFS= read -r rel; do
            verdict_one "$t" "$i" "$rel" &
            i=$((i + 1))
            [ $((i % JOBS)) -eq 0 ] && wait
        done < "$WORK/files/list.txt"
        wait
    done
fi

# 4. Report
/usr/bin/python3 - "$WORK" <<'PY' | tee "$WORK/report.md"
import json, os, re, sys
work = sys.argv[1]
corpus = open(f"{work}/corpus.txt").read().strip()
tools = open(f"{work}/tools.txt").read().split()

def read(p, default=""):
    try:
        return open(p, errors="replace").read()
    except OSError:
        return default

def timing(tag):
    t, rc = read(f"{work}/{tag}.time"), read(f"{work}/{tag}.rc").strip()
    m = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", t)
    wall = (int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))) if m else None
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", t)
    rss = int(m.group(1)) / 1024 if m else None
    return wall, rss, (int(rc) if rc.lstrip("-").isdigit() else None)

FICKLING_ORDER = ["LIKELY_SAFE", "POSSIBLY_UNSAFE", "SUSPICIOUS", "LIKELY_UNSAFE", "LIKELY_OVERTLY_MALICIOUS", "OVERTLY_MALICIOUS"]

def classify(tool, out, rc):
    """FLAG (called it dangerous), WARN (suspicious only), ERR (failed), SKIP (did not scan), clean."""
    if rc in (124, 137):
        return "TIMEOUT"
    if tool == "picklescan":
        d = re.search(r"Dangerous globals: (\d+)", out)
        s = re.search(r"Suspicious globals: (\d+)", out)
        if d and int(d.group(1)) > 0:
            return "FLAG"
        if s and int(s.group(1)) > 0:
            return "WARN"
        if "Traceback" in out or "ERROR" in out or not d:
            return "ERR"
        return "SKIP" if re.search(r"Scanned files: 0\b", out) else "clean"
    if tool == "modelscan":
        if "Unsafe operator found" in out or re.search(r"--- (CRITICAL|HIGH|MEDIUM|LOW) ---", out):
            return "FLAG"
        if "--- Errors ---" in out or rc == 2:
            return "ERR"
        return "SKIP" if rc == 3 else ("clean" if rc == 0 else "ERR")
    if tool == "fickling":
        res = re.findall(r"severity=(\w+), results=(\d+), errors=(\d+)", out)
        if not res:
            return "ERR" if ("Traceback" in out or rc not in (0, None)) else "SKIP"
        worst = max(FICKLING_ORDER.index(s) if s in FICKLING_ORDER else 2 for s, _, _ in res)
        # fickling's generic analysis calls every non-stdlib import (torch, numpy, sklearn) LIKELY_UNSAFE:
        # only its "overtly malicious" grades count as a detection, the rest as a warning.
        if worst >= FICKLING_ORDER.index("LIKELY_OVERTLY_MALICIOUS"):
            return "FLAG"
        if all(int(e) > 0 and int(r) == 0 for _, r, e in res):
            return "ERR"
        return "WARN" if worst > 0 else "clean"
    raise ValueError(tool)

SEV = {"critical": 4, "high": 3, "medium": 2, "low": 1, "info": 0}

def aegis_by_file(text, files):
    """Findings of aegis's whole-corpus JSON grouped by corpus file (nested locations included)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    keys = sorted(files, key=len, reverse=True)
    by = {}
    for f in doc.get("findings", []):
        loc = f.get("location") or {}
        path = str(loc.get("file", ""))
        path = os.path.normpath(path if os.path.isabs(path) else os.path.join(work, "cwd", path))  # the tools' cwd
        rel = next((k for k in keys if path == os.path.join(corpus, k) or path.startswith(os.path.join(corpus, k)) and
                    not path[len(os.path.join(corpus, k))].isalnum()), None)
        if rel is not None:
            by.setdefault(rel, []).append(f)
    return by

def aegis_verdict(findings):
    if not findings:
        return "clean"
    worst = max(SEV.get(str(f.get("severity", "")).lower(), 0) for f in findings)
    return "FLAG" if worst >= 3 else ("WARN" if worst >= 1 else "clean")

# corpus inventory
sizes = {}
for dp, _, ns in os.walk(corpus):
    for n in ns:
        p = os.path.join(dp, n)
        sizes[os.path.relpath(p, corpus)] = os.path.getsize(p)
total_mb = sum(sizes.values()) / 1e6
manifest = {e["file"]: e for e in json.loads(read(f"{corpus}/malicious/manifest.json", "[]"))}
small = [l for l in read(f"{work}/files/list.txt").splitlines() if l]

def group(rel):
    top = rel.split("/")[0]
    return top if top in ("benign", "malicious", "malformed", "big") else "other"

parts = [l for l in read(f"{work}/parts.txt").splitlines() if l]
verdicts = {t: {} for t in tools}
aegis_findings = {}
if "aegis" in tools:
    for part in parts:
        if not os.path.exists(f"{work}/corpus.aegis.{part}.rc"):
            continue
        in_part = [r for r in sizes if r.startswith(part + "/")]
        by = aegis_by_file(read(f"{work}/corpus.aegis.{part}.out"), in_part)
        aegis_findings.update(by or {})
        for rel in in_part:
            if not rel.endswith("manifest.json"):
                verdicts["aegis"][rel] = "ERR" if by is None else aegis_verdict(by.get(rel))
for t in tools:
    if t != "aegis":
        for i, rel in enumerate(small):
            rc = read(f"{work}/files/{t}/{i}.rc").strip()
            if rc:
                verdicts[t][rel] = classify(t, read(f"{work}/files/{t}/{i}.out"), int(rc))
big = [l for l in read(f"{work}/big/list.txt").splitlines() if l]
for i, rel in enumerate(big):
    for t in tools:
        if not os.path.exists(f"{work}/big/{i}.{t}.rc"):
            continue
        _, _, rc = timing(f"big/{i}.{t}")
        if t == "aegis":
            by = aegis_by_file(read(f"{work}/big/{i}.aegis.out"), [rel])
            verdicts[t][rel] = "TIMEOUT" if rc in (124, 137) else ("ERR" if by is None else aegis_verdict(by.get(rel)))
        else:
            verdicts[t][rel] = classify(t, read(f"{work}/big/{i}.{t}.out") + read(f"{work}/big/{i}.{t}.err"), rc)

def count(t, grp, states):
    return sum(1 for rel, v in verdicts[t].items() if group(rel) == grp and v in states)

def n_in(t, grp):
    return sum(1 for rel in verdicts[t] if group(rel) == grp)

print(f"## Scanner comparison on `{corpus}` ({len(sizes)} files, {total_mb:,.0f} MB)\n")
def aborted(t, part):
    """Why a tool's run over one folder did not finish normally, or None."""
    wall, _, rc = timing(f"corpus.{t}.{part}")
    out = read(f"{work}/corpus.{t}.{part}.out") + read(f"{work}/corpus.{t}.{part}.err")
    if rc in (124, 137):
        return "timeout"
    if t == "picklescan" and "Unhandled exception" in out:
        return "aborted (unhandled exception)"
    if t == "modelscan" and (rc == 4 or re.search(r"^Exception: ", out, re.M)):
        return "aborted (exception)"
    if t == "aegis" and rc not in (0, 1):
        return f"exit {rc}"
    return None

def corpus_timing(t):
    walls, rss, notes = [], [], []
    for part in parts:
        w, r, _ = timing(f"corpus.{t}.{part}")
        if w is None:
            continue
        walls.append(w)
        rss.append(r or 0)
        why = aborted(t, part)
        if why:
            notes.append(f"{part}/: {why} after {w:.1f} s")
    return (sum(walls) if walls else None), (max(rss) if rss else None), notes

a_wall = corpus_timing("aegis")[0] if "aegis" in tools else None
print("| tool | corpus wall s | max RSS MB | MB/s | aegis speed-up | malicious flagged | +warned | missed | errors | benign flagged | benign warned | malformed reported | corpus-run notes |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for t in tools:
    wall, rss, notes = corpus_timing(t)
    mbps = total_mb / wall if wall else None
    speed = (wall / a_wall) if (wall and a_wall and t != "aegis") else None
    nm = n_in(t, "malicious")
    fmt = lambda x, f: ("-" if x is None else f.format(x))
    print(f"| {t}{' (per-file runs)' if t == 'fickling' else ''} | {fmt(wall, '{:.1f}')} | "
          f"{fmt(rss, '{:,.0f}')} | {fmt(mbps, '{:.1f}')} | {fmt(speed, '{:.1f}x')} | "
          f"{count(t, 'malicious', ('FLAG',))}/{nm} | {count(t, 'malicious', ('WARN',))} | "
          f"{count(t, 'malicious', ('clean', 'SKIP'))} | {count(t, 'malicious', ('ERR', 'TIMEOUT'))} | "
          f"{count(t, 'benign', ('FLAG',))}/{n_in(t, 'benign')} (+{count(t, 'big', ('FLAG',))} big) | "
          f"{count(t, 'benign', ('WARN',))} (+{count(t, 'big', ('WARN',))} big) | "
          f"{count(t, 'malformed', ('FLAG', 'WARN', 'ERR'))}/{n_in(t, 'malformed')} | {'; '.join(notes) or 'ok'} |")
if "aegis" in tools and os.path.exists(f"{work}/whole.aegis.rc"):
    w, r, rc = timing("whole.aegis")
    if w:
        print(f"\naegis in one run over the whole corpus: {w:.1f} s, {r:,.0f} MB peak RSS, {total_mb / w:,.1f} MB/s, exit {rc}")
print("\nColumns: wall time (summed) and peak RSS of one run per top-level folder of the corpus (/usr/bin/time -v);"
      " a run that aborted is noted, and its time covers only what it did; MB/s = corpus size / wall;"
      " speed-up = peer wall / aegis wall. Verdicts per file: FLAG = reported dangerous (aegis: a finding at high or"
      " critical), warned = suspicious only (aegis: medium/low), missed = passed as clean or skipped, errors = the tool"
      " failed on the file. Peers' verdicts come from one run per file (their best case; picklescan's folder mode skips"
      " .npy); aegis's from its whole-corpus JSON. fickling has no folder mode, so its corpus time includes one"
      " interpreter start per file.\n")

if big:
    print("### Big files, one run each\n")
    print("| file | MB | " + " | ".join(f"{t} s / RSS MB / MB/s / verdict" for t in tools) + " |")
    print("|---|---:|" + "---|" * len(tools))
    for i, rel in enumerate(big):
        mb = sizes.get(rel, 0) / 1e6
        cells = []
        for t in tools:
            wall, rss, rc = timing(f"big/{i}.{t}")
            if wall is None:
                cells.append("-")
                continue
            cells.append(f"{wall:.1f} / {rss:,.0f} / {mb / wall if wall else 0:.1f} / "
                         f"{'TIMEOUT' if rc in (124, 137) else verdicts[t].get(rel, '?')}")
        print(f"| {rel} | {mb:,.0f} | " + " | ".join(cells) + " |")
    for key, label in (("ndarray_p5", "big raw pickle stream (payload-heavy, protocol 5)"),
                       ("dense_objects", "opcode-dense pickle")):
        for i, rel in enumerate(big):
            if key in rel:
                parts = []
                for t in tools:
                    wall, _, _ = timing(f"big/{i}.{t}")
                    if wall:
                        parts.append(f"{t} {sizes[rel] / 1e6 / wall:,.1f} MB/s")
                print(f"\n{label} `{rel}`: " + ", ".join(parts))
    print()

print("### Malicious files missed (clean/skipped = missed; ERR = tool failed)\n")
for t in tools:
    miss = sorted(f"{rel.split('/', 1)[1]}({v})" for rel, v in verdicts[t].items()
                  if group(rel) == "malicious" and v not in ("FLAG", "WARN"))
    print(f"- **{t}** ({len(miss)}): " + (", ".join(miss) if miss else "none"))
print("\n### Benign files flagged (false positives)\n")
for t in tools:
    fp = sorted(f"{rel}({v})" for rel, v in verdicts[t].items() if group(rel) in ("benign", "big") and v in ("FLAG", "WARN"))
    print(f"- **{t}** ({len(fp)}): " + (", ".join(fp) if fp else "none"))
print("\n### Malformed files passed silently\n")
for t in tools:
    silent = sorted(rel.split("/", 1)[1] for rel, v in verdicts[t].items() if group(rel) == "malformed" and v in ("clean", "SKIP"))
    print(f"- **{t}** ({len(silent)}): " + (", ".join(silent) if silent else "none"))
if "aegis" in tools and manifest:
    by = aegis_findings
    unnamed = []
    for name, e in sorted(manifest.items()):
        text = json.dumps(by.get(f"malicious/{name}", []))
        missing = [c for c in e["expect_callables"] if c not in text]
        worst = max((SEV.get(str(f.get("severity", "")).lower(), 0) for f in by.get(f"malicious/{name}", [])), default=-1)
        if missing or worst < SEV[e["expect_min_severity"]]:
            unnamed.append(f"{name} (max severity {[k for k, v in SEV.items() if v == worst] or ['none']}, unnamed {missing})")
    print(f"\n### aegis against malicious/manifest.json: {len(manifest) - len(unnamed)}/{len(manifest)} meet severity and name the callables\n")
    for u in unnamed:
        print(f"- {u}")
PY
echo "compare_scanners: report in $WORK/report.md" >&2
