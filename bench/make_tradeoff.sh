#!/bin/bash
# The defence trade-off table of examples/fashion-mnist: the plain model against the models
# `aegis harden` trains from examples/fashion-mnist/model_init.pt (PGD adversarial training, TRADES,
# Gaussian augmentation), each scored the same way:
#   clean accuracy and PGD-20 Linf robust accuracy at eps 0.05 and 0.1 on the first $N test images,
#   randomized-smoothing certified accuracy (sigma $SIGMA) at L2 radius 0 / 0.25 / 0.5 / 1.0 on the first $CERT_N.
#
#   bench/make_tradeoff.sh              trains the three models into $OUT, scores all four, prints Markdown
#   SKIP_TRAIN=1 bench/make_tradeoff.sh re-scores the models already in $OUT
#
# Environment: AEGIS (build/aegis), DATA (Debian's fashion-mnist), OUT (/tmp/aegis-bench),
# TRAIN_LIMIT (0 = the whole 60,000-image training split), EPOCHS (1, adversarial methods),
# GAUSS_EPOCHS (2), N (1000), CERT_N (200), CERT_SAMPLES (1000), SIGMA (0.25), THREADS (2).
# The raw JSON reports and the exact commands (commands.txt) stay in $OUT.
set -u -o pipefail

HERE=$(dirname "$(realpath "$0")")
ROOT=$(dirname "$HERE")
AEGIS=${AEGIS:-$ROOT/build/aegis}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
OUT=${OUT:-/tmp/aegis-bench}
TRAIN_LIMIT=${TRAIN_LIMIT:-0}
EPOCHS=${EPOCHS:-1}
GAUSS_EPOCHS=${GAUSS_EPOCHS:-2}
N=${N:-1000}
CERT_N=${CERT_N:-200}
CERT_SAMPLES=${CERT_SAMPLES:-1000}
SIGMA=${SIGMA:-0.25}
THREADS=${THREADS:-2}
SKIP_TRAIN=${SKIP_TRAIN:-0}
PYTHON=${PYTHON:-/usr/bin/python3}

[ -x "$AEGIS" ] || { echo "missing $AEGIS (build aegis first, or set AEGIS=...)" >&2; exit 2; }
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
cd "$ROOT" || exit 2
INIT=examples/fashion-mnist/model_init.pt
STANDARD=examples/fashion-mnist/model.pt
CMDS=$OUT/tradeoff_commands.txt
LOADS=$OUT/tradeoff_load.tsv
[ "$SKIP_TRAIN" = 1 ] || : > "$CMDS"
: > "$LOADS"

run() {  # label, then the command; logs the command and the load, tolerates exit 1 (= findings)
    local label=$1; shift
    printf '%s\n' "$*" | sed "s|$ROOT/||g" >> "$CMDS"
    local before; before=$(cut -d' ' -f1-3 /proc/loadavg)
    local t0; t0=$(date +%s.%N)
    echo "[$label] $*" >&2
    "$@"
    local rc=$?
    printf '%s\t%s\t%s\t%.1f\n' "$label" "$before" "$(cut -d' ' -f1-3 /proc/loadavg)" \
        "$(echo "$(date +%s.%N) - $t0" | bc)" >> "$LOADS"
    if [ $rc -gt 1 ]; then echo "[$label] failed with exit code $rc" >&2; return 1; fi
}

limit_args=()
[ "$TRAIN_LIMIT" != 0 ] && limit_args=(--limit "$TRAIN_LIMIT")

if [ "$SKIP_TRAIN" != 1 ]; then
    for method in pgd trades gaussian; do
        extra=(--eps 0.1 --steps 7 --epochs "$EPOCHS")
        [ $method = gaussian ] && extra=(--sigma "$SIGMA" --epochs "$GAUSS_EPOCHS")
        run "harden $method" "$AEGIS" harden --model "$INIT" --data "$DATA" --split train "${limit_args[@]}" \
            --method $method "${extra[@]}" --threads "$THREADS" --output "$OUT/$method.pt" \
            --format json --quiet --report "$OUT/harden_$method.json" || exit 1
    done
fi

for name in standard pgd trades gaussian; do
    model=$OUT/$name.pt
    [ $name = standard ] && model=$STANDARD
    [ -f "$model" ] || { echo "missing $model (run without SKIP_TRAIN=1)" >&2; exit 1; }
    run "attack $name" "$AEGIS" attack --model "$model" --data "$DATA" --split test --limit "$N" \
        --attack pgd --steps 20 --eps 0.05,0.1 --threads "$THREADS" \
        --format json --quiet --output "$OUT/tradeoff_attack_$name.json" || exit 1
    run "certify $name" "$AEGIS" certify --model "$model" --data "$DATA" --split test --sigma "$SIGMA" \
        --n "$CERT_SAMPLES" --n0 100 --alpha 0.001 --limit "$CERT_N" --radii 0,0.25,0.5,1.0 --threads "$THREADS" \
        --format json --quiet --output "$OUT/tradeoff_certify_$name.json" || exit 1
done

"$PYTHON" - "$OUT" "$TRAIN_LIMIT" "$N" "$CERT_N" "$CERT_SAMPLES" "$SIGMA" <<'EOF' | tee "$OUT/tradeoff.md"
import json, os, sys
out, train_limit, n, cert_n, cert_samples, sigma = sys.argv[1], int(sys.argv[2]), *sys.argv[3:7]
train_n = "60,000" if train_limit == 0 else f"{train_limit:,}"
label = {
    "standard": ("`model.pt` (standard training)", "-"),
    "pgd": ("PGD adversarial training (Madry)", "eps 0.1, 7 steps"),
    "trades": ("TRADES (beta 6)", "eps 0.1, 7 steps"),
    "gaussian": ("Gaussian augmentation", "sigma 0.25"),
}
print(f"| model | training | train s | clean % | PGD-20 eps 0.05 | PGD-20 eps 0.1 "
      f"| certified r=0 | r=0.25 | r=0.5 | r=1.0 |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for name in ("standard", "pgd", "trades", "gaussian"):
    att = json.load(open(os.path.join(out, f"tradeoff_attack_{name}.json")))
    cert = json.load(open(os.path.join(out, f"tradeoff_certify_{name}.json")))
    rob = {round(r["eps"], 4): r["robust_accuracy"] * 100 for r in att["results"]}
    ca = {round(c["radius"], 4): c["certified_accuracy"] * 100 for c in cert["certified_accuracy"]}
    train, secs = label[name][1], "-"
    h = os.path.join(out, f"harden_{name}.json")
    if name != "standard" and os.path.exists(h):
        hj = json.load(open(h))
        secs = f"{sum(e['seconds'] for e in hj['epochs']):.0f}"
        train = f"{label[name][1]}, {len(hj['epochs'])} epoch(s) over {train_n} images"
    elif name == "standard":
        train = "train_cnn.py: Adam, 2 epochs, 60,000 images"
    print(f"| {label[name][0]} | {train} | {secs} | {att['clean_accuracy'] * 100:.1f} | {rob.get(0.05, 0):.1f} "
          f"| {rob.get(0.1, 0):.1f} | {ca.get(0.0, 0):.1f} | {ca.get(0.25, 0):.1f} | {ca.get(0.5, 0):.1f} | {ca.get(1.0, 0):.1f} |")
print(f"\nClean and PGD-20 (Linf, step 2.5 eps / 20, no random start) on the first {n} test images; certified "
      f"accuracy (randomized smoothing, sigma {sigma}, n {cert_samples}, n0 100, alpha 0.001) on the first {cert_n}; "
      f"train s = the epochs' own seconds from the harden report.")
EOF
