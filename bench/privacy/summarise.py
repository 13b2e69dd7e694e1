#!/usr/bin/python3
"""Markdown tables, Aegis next to ART, from the results folder of compare_privacy.sh.

    /usr/bin/python3 bench/privacy/summarise.py /tmp/aegis-privacy-bench > summary.md

Reads (whatever is present): meta.json, mia-target/target.json, art_mia.json, aegis_mia_metrics.json
(metrics_from_scores.py on aegis's scores.csv: the same evaluation half as ART), aegis_mia.json,
badnets/badnets.json, art_poison.json, aegis_poison.json, art_extract.json, aegis_extract.json and the
/usr/bin/time -v reports in time/. Rates given by aegis as fractions (<= 1) are shown as percent where the
ART side reports percent (fidelity, accuracy). "ART s / aegis s" is the ratio of wall times.
"""
import glob
import json
import os
import re
import sys

# ART method <-> aegis method, for the time ratios
POISON_PAIRS = {"art-activation-defence": "activation-clustering", "art-spectral-signature": "spectral-signature"}
EXTRACT_PAIRS = {"art-knockoff-random": "natural", "art-copycat": "natural", "art-knockoff-adaptive": "adaptive"}


def load(out, name):
    path = os.path.join(out, name)
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (ValueError, OSError) as err:
        print(f"> could not read {name}: {err}\n")
        return None


def wall_and_rss(out, step):
    """(wall seconds, max RSS MB) from time/STEP.txt (/usr/bin/time -v), or (None, None)."""
    path = os.path.join(out, "time", f"{step}.txt")
    if not os.path.exists(path):
        return None, None
    text = open(path).read()
    wall = rss = None
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    if m:
        parts = [float(p) for p in m.group(1).split(":")]
        wall = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        rss = int(m.group(1)) / 1024.0
    return wall, rss


def f(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:.{nd}f}"


def pct(v):
    """A rate as percent: aegis may report fractions, ART reports percent."""
    if v is None:
        return None
    v = float(v)
    return v * 100.0 if v <= 1.0 else v


def frac(v):
    if v is None:
        return None
    v = float(v)
    return v / 100.0 if v > 1.0 else v


def ratio(a, b):
    return f"{a / b:.2f}x" if (a is not None and b) else "-"


def first(d, *keys):
    for k in keys:
        if isinstance(d, dict) and d.get(k) is not None:
            return d[k]
    return None


def rows_of(report, key):
    if not isinstance(report, dict):
        return []
    rows = report.get(key)
    return rows if isinstance(rows, list) else []


def section_mia(out):
    art, aeg, aeg_raw = load(out, "art_mia.json"), load(out, "aegis_mia_metrics.json"), load(out, "aegis_mia.json")
    if not (art or aeg):
        return
    tgt = load(out, "mia-target/target.json") or {}
    print("## Membership inference (`aegis mia` vs ART MembershipInferenceBlackBox)\n")
    if tgt:
        r = tgt.get("recipe", {})
        print(f"Target: {tgt.get('arch')} ({tgt.get('parameters')} parameters), {tgt.get('members')} members "
              f"(train split) / {tgt.get('nonmembers')} non-members (test split); {r.get('epochs')} epochs, batch "
              f"{r.get('batch')}, Adam {r.get('learning_rate')}, no weight decay. Accuracy: members "
              f"{f(tgt.get('member_accuracy'), 2)}%, non-members {f(tgt.get('nonmember_accuracy'), 2)}%, full test "
              f"{f(tgt.get('test_accuracy'), 2)}%; trained in {f(tgt.get('train_seconds'), 1)} s "
              f"({f(tgt.get('seconds_per_epoch_per_5000'), 3)} s per epoch per 5000 records, PyTorch).\n")
    ev = (art or aeg or {}).get("eval", {})
    print(f"Scored on the same evaluation half: {ev.get('members')} members + {ev.get('nonmembers')} non-members "
          f"(ART's attack models are fitted on the other half). balanced acc = best (TPR+TNR)/2 over thresholds.\n")
    aeg_secs = {}
    for r in rows_of(aeg_raw, "attacks"):
        name = first(r, "attack", "name")
        if name is not None and first(r, "seconds") is not None:
            aeg_secs[name] = float(r["seconds"])
    print("| tool | attack | AUC | TPR @ 1% FPR | TPR @ 0.1% FPR | balanced acc | seconds | target queries |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for tool, rep in (("aegis", aeg), ("ART", art)):
        for r in rows_of(rep, "attacks"):
            secs = r.get("seconds") if tool == "ART" else aeg_secs.get(r["attack"])
            print(f"| {tool} | {r['attack']} | {f(r.get('auc'))} | {f(r.get('tpr_at_1pct_fpr'), 4)} "
                  f"| {f(r.get('tpr_at_0.1pct_fpr'), 4)} | {f(r.get('balanced_accuracy'))} | {f(secs, 2)} "
                  f"| {r.get('target_queries', '-')} |")
    print()
    best = {}
    for tool, rep in (("aegis", aeg), ("ART", art)):
        rs = rows_of(rep, "attacks")
        if rs:
            best[tool] = (max(rs, key=lambda r: r.get("auc") or 0), max(rs, key=lambda r: r.get("tpr_at_1pct_fpr") or 0))
    if best:
        print("Best per tool: " + "; ".join(
            f"{t} AUC {f(a['auc'])} ({a['attack']}), TPR@1% {f(b['tpr_at_1pct_fpr'], 4)} ({b['attack']})"
            for t, (a, b) in best.items()) + ".\n")
    wa, ra = wall_and_rss(out, "aegis_mia")
    wb, rb = wall_and_rss(out, "art_mia")
    if wa or wb:
        print(f"Whole runs (wall, max RSS): aegis mia {f(wa, 1)} s / {f(ra, 0)} MB (all its attacks, reference "
              f"models included); art_mia.py {f(wb, 1)} s / {f(rb, 0)} MB (7 attacks, data loading included); "
              f"ART s / aegis s = {ratio(wb, wa)}.\n")
    if art and art.get("prediction_features"):
        print(f"ART's prediction features: the target's {art['prediction_features']}.\n")


def section_extract(out):
    art, aeg = load(out, "art_extract.json"), load(out, "aegis_extract.json")
    if not (art or aeg):
        return
    print("## Model extraction (`aegis extract` vs ART KnockoffNets / CopycatCNN)\n")
    if art:
        print(f"Target {os.path.basename(art.get('target', '?'))} (accuracy {f(art.get('target_accuracy'), 2)}% on "
              f"the first {art.get('test_limit')} test images); surrogate from {os.path.basename(art.get('surrogate_init', '?'))}, "
              f"{art.get('epochs')} epochs, batch {art.get('batch')}, Adam {art.get('learning_rate')}; thief pool: "
              f"the train split. Fidelity = % agreement with the target on those test images.\n")
    rows = []
    for r in rows_of(aeg, "results"):
        rows.append(("aegis", str(first(r, "strategy", "method")), int(r["budget"]), pct(r.get("fidelity")),
                     pct(r.get("surrogate_accuracy")), r.get("seconds"), r.get("queries")))
    for r in rows_of(art, "results"):
        rows.append(("ART", r["method"], int(r["budget"]), r.get("fidelity"), r.get("surrogate_accuracy"),
                     r.get("seconds"), r.get("queries")))
    aeg_time = {(m, b): s for t, m, b, _, _, s, _ in rows if t == "aegis"}
    print("| budget | tool | method | fidelity % | surrogate acc % | seconds | queries | ART s / aegis s (pair) |")
    print("|---:|---|---|---:|---:|---:|---:|---|")
    for t, m, b, fid, acc, s, q in sorted(rows, key=lambda r: (r[2], r[0] != "aegis", r[1])):
        pair = ""
        if t == "ART" and m in EXTRACT_PAIRS:
            other = aeg_time.get((EXTRACT_PAIRS[m], b))
            pair = f"{ratio(s, other)} (vs {EXTRACT_PAIRS[m]})" if other else ""
        print(f"| {b} | {t} | {m} | {f(fid, 2)} | {f(acc, 2)} | {f(s, 2)} | {q if q is not None else '-'} | {pair} |")
    print()
    wa, _ = wall_and_rss(out, "aegis_extract")
    wb, _ = wall_and_rss(out, "art_extract")
    if wa or wb:
        print(f"Whole runs (wall): aegis extract {f(wa, 1)} s, art_extract.py {f(wb, 1)} s "
              f"(different method sets: compare the pairs above).\n")


def section_poison(out):
    art, aeg = load(out, "art_poison.json"), load(out, "aegis_poison.json")
    if not (art or aeg):
        return
    meta = load(out, "badnets/badnets.json") or {}
    print("## Poison detection (`aegis poison` vs ART ActivationDefence / SpectralSignatureDefense)\n")
    if meta:
        print(f"BadNets: {meta.get('records')} training records, {meta.get('poisoned')} poisoned "
              f"({100 * meta.get('fraction', 0):.0f}%) to class {meta.get('target_class')}; the model's clean test "
              f"accuracy {f(meta.get('clean_test_accuracy'), 2)}%, attack success rate "
              f"{f(meta.get('attack_success_rate'), 2)}%.\n")
    aeg_time = {first(r, "method", "name"): r.get("seconds") for r in rows_of(aeg, "detectors")}
    print("| tool | detector | layer | flagged | precision | recall | F1 | seconds | ART s / aegis s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows_of(aeg, "detectors"):
        print(f"| aegis | {first(r, 'method', 'name')} | {r.get('layer', '-')} | {r.get('flagged', '-')} "
              f"| {f(frac(r.get('precision')))} | {f(frac(r.get('recall')))} | {f(frac(r.get('f1')))} "
              f"| {f(r.get('seconds'), 2)} | |")
    for tool, key in (("ART", "detectors"), ("reference (not ART)", "reference")):
        for r in rows_of(art, key):
            layer = r.get("layer", {})
            base = r["method"].replace("-logits", "")
            other = aeg_time.get(POISON_PAIRS.get(base)) if (tool == "ART" and r["method"] == base) else None
            print(f"| {tool} | {r['method']} | {layer.get('name')} ({layer.get('type')}, {layer.get('dim')}-d) "
                  f"| {r.get('flagged')} | {f(r.get('precision'))} | {f(r.get('recall'))} | {f(r.get('f1'))} "
                  f"| {f(r.get('seconds'), 2)} | {ratio(r.get('seconds'), other) if other else ''} |")
    print()
    if rows_of(art, "reference"):
        print("The reference row is not ART: the spectral signature as Tran et al. publish it (centred "
              "activations), with ART's per-class cutoff, on the same activations; ART projects the uncentred "
              "activations.\n")
    wa, _ = wall_and_rss(out, "aegis_poison")
    wb, _ = wall_and_rss(out, "art_poison")
    if wa or wb:
        print(f"Whole runs (wall): aegis poison {f(wa, 1)} s (all its detectors), art_poison.py {f(wb, 1)} s.\n")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    meta = load(out, "meta.json") or {}
    print(f"# aegis mia / extract / poison vs {('ART ' + meta['art_version']) if meta.get('art_version') else 'ART'} "
          f"({meta.get('date', '?')})\n")
    if meta:
        print(f"- machine: {meta.get('host_cpus')} CPUs ({meta.get('cpu')}), kernel {meta.get('kernel')}; torch "
              f"{meta.get('torch')}, numpy {meta.get('numpy')}, scikit-learn {meta.get('sklearn')} (Python side); "
              f"ART at {meta.get('art_commit')}; {meta.get('threads')} torch threads on both sides, "
              f"OPENBLAS_NUM_THREADS={meta.get('openblas_threads')}")
    tsv = os.path.join(out, "load.tsv")
    if os.path.exists(tsv):
        lines = [l.rstrip("\n").split("\t") for l in open(tsv) if l.strip()]
        if lines:
            print("- load average (1/5/15 min) before / after each step, exit code: " +
                  "; ".join(f"{s}: {a} / {b}, rc {rc}" for s, a, b, rc in lines))
    print()
    section_mia(out)
    section_extract(out)
    section_poison(out)
    steps = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(out, "time", "*.txt")))
    if steps:
        print("## Wall time and peak memory of every step\n")
        print("| step | wall s | max RSS MB |")
        print("|---|---:|---:|")
        for s in steps:
            w, r = wall_and_rss(out, s)
            print(f"| {s} | {f(w, 1)} | {f(r, 0)} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
