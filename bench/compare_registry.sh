#!/bin/bash
# Whole-registry scans, `aegis scan` against ModelScan, on the corpora of bench/make_registry_corpus.py:
# a Hugging Face cache of many small models (small/) and one cache entry of about 20 GB (big/).
#
#   bench/compare_registry.sh CORPUS        prints a Markdown table; raw outputs stay in $WORK
#
# Both tools get the same warm page cache (every file is read once before each run) and the same
# folder. ModelScan runs from source as /work/shared/peers/scanner_run_tools.sh runs it.
# Environment: AEGIS (default build/aegis), RUNS (3: the best of N is reported), WORK, TIMEOUT (3600 s).
set -u -o pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 CORPUS   (a folder made by bench/make_registry_corpus.py)" >&2
    exit 2
fi
CORPUS=$(realpath "$1")
HERE=$(dirname "$(realpath "$0")")
AEGIS=${AEGIS:-$(dirname "$HERE")/build/aegis}
RUN_TOOLS=${PEERS_DIR:-/work/shared/peers}/scanner_run_tools.sh
RUNS=${RUNS:-3}
TIMEOUT=${TIMEOUT:-3600}
WORK=${WORK:-$(mktemp -d /tmp/aegis_registry.XXXXXX)}
mkdir -p "$WORK"
[ -x "$AEGIS" ] || { echo "build aegis first (make build)" >&2; exit 2; }
[ -d /tmp/src/protectai+modelscan ] || { echo "ModelScan sources missing in /tmp/src/protectai+modelscan (see bench/README.md)" >&2; exit 2; }

run_one() {  # tool folder tag
    local tool=$1 dir=$2 tag=$3
    find -L "$dir" -type f -exec cat {} + > /dev/null 2>&1
    case $tool in
        aegis) /usr/bin/time -f "%e %M" -o "$WORK/$tag.time" timeout "$TIMEOUT" \
                   "$AEGIS" scan "$dir" --format json --quiet --output "$WORK/$tag.json" 2> "$WORK/$tag.err";;
        modelscan) (cd "$WORK" && /usr/bin/time -f "%e %M" -o "$WORK/$tag.time" timeout "$TIMEOUT" \
                   "$RUN_TOOLS" modelscan "$dir" -r json -o "$WORK/$tag.json" > "$WORK/$tag.out" 2> "$WORK/$tag.err");;
    esac
    echo $? > "$WORK/$tag.rc"
}

summary() {  # tool tag -> "files findings"
    /usr/bin/python3 - "$1" "$WORK/$2.json" <<'EOF'
import json, sys
tool, path = sys.argv[1], sys.argv[2]
try:
    doc = json.load(open(path))
except Exception as e:
    print("? ?"); sys.exit()
if tool == "aegis":
    s = doc["summary"]
    worst = sum(1 for f in doc["findings"] if f["severity"] in ("critical", "high"))
    print(s["files"], worst, len(doc.get("models", [])))
else:
    s = doc.get("summary", {})
    scanned = s.get("scanned", {}).get("total_scanned", "?")
    issues = s.get("total_issues", len(doc.get("issues", [])))
    print(scanned, issues, "-")
EOF
}

echo "| corpus | files / bytes | tool | wall s (best of $RUNS) | max RSS MB | files scanned | findings (aegis: high+critical) | models | ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
for part in small big; do
    dir=$CORPUS/$part
    [ -d "$dir" ] || continue
    nfiles=$(find "$dir" -type f | wc -l)
    bytes=$(du -sb "$dir" | cut -f1)
    declare -A best=()
    for tool in aegis modelscan; do
        best[$tool]=""
        for r in $(seq 1 "$RUNS"); do
            run_one "$tool" "$dir" "$part.$tool.$r"
            t=$(tail -1 "$WORK/$part.$tool.$r.time" 2>/dev/null | cut -d' ' -f1)
            if [ -z "${best[$tool]}" ] || awk "BEGIN{exit !($t < ${best[$tool]%% *})}"; then
                best[$tool]="$t $(tail -1 "$WORK/$part.$tool.$r.time" | cut -d' ' -f2) $r"
            fi
        done
    done
    for tool in aegis modelscan; do
        read -r t rss r <<< "${best[$tool]}"
        read -r scanned findings models <<< "$(summary "$tool" "$part.$tool.$r")"
        ratio=$(awk "BEGIN{printf \"%.1fx\", ${best[modelscan]%% *} / $t}")
        [ "$tool" = modelscan ] && ratio="1x"
        echo "| $part | $nfiles / $((bytes / 1000000)) MB | $tool | $t | $((rss / 1024)) | $scanned | $findings | $models | $ratio |"
    done
done
echo
echo "raw outputs: $WORK" >&2
