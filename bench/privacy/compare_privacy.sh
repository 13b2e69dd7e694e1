#!/bin/bash
# Side by side: `aegis mia`, `aegis extract`, `aegis poison` against IBM's Adversarial Robustness Toolbox
# (ART 1.20.1) on the same models, the same records and the same settings. See bench/privacy/README.md.
#
#   bench/privacy/compare_privacy.sh                 every phase, both tools, results in $OUT
#   PHASES="poison" bench/privacy/compare_privacy.sh
#   SIDES=art bench/privacy/compare_privacy.sh       the ART side only (no aegis binary needed)
#   SUMMARY_ONLY=1 bench/privacy/compare_privacy.sh  re-print the tables from the JSON already in $OUT
#
# Phases, in order (each builds its inputs, then runs ART, then aegis, on the same files):
#   mia      make_mia_target.py -> $OUT/mia-target (members.npy, nonmembers.npy, target.pt, recipe.yaml);
#            art_mia.py (writes the evaluation half: mia-target/eval_{members,nonmembers}.npy);
#            aegis mia (scores in $OUT/mia/scores.csv) and metrics_from_scores.py on the same evaluation half
#   poison   make_badnets.py -> $OUT/badnets (poisoned.npz, truth.npy, model.pt); art_poison.py; aegis poison
#   extract  art_extract.py; aegis extract (target examples/fashion-mnist/model.pt, surrogate model_init.pt)
# Then summarise.py prints Markdown tables (also in $OUT/summary.md).
#
# Every run is wrapped in /usr/bin/time -v ($OUT/time/<step>.txt: wall time, max RSS); stdout of each tool
# goes to its JSON, stderr to $OUT/logs/<step>.log. Both sides run with OPENBLAS_NUM_THREADS=1 and 2 torch
# threads (the Python scripts call torch.set_num_threads($THREADS)). Inputs that already exist are reused
# (REBUILD=1 regenerates them). On a shared machine, QUIET_WAIT=S waits up to S seconds before each timed
# run for the CPUs to be QUIET_IDLE % (90) idle.
#
# Environment: AEGIS (build/aegis), DATA (/usr/share/datasets/fashion-mnist), OUT (/tmp/aegis-privacy-bench),
# ART_PATH (/tmp/art), PYTHON (/usr/bin/python3), THREADS (2), SEED (0), PHASES ("mia poison extract"),
# SIDES ("art aegis"), and per phase:
#   MIA_MEMBERS (5000) MIA_NONMEMBERS (5000) MIA_EPOCHS (60) MIA_ARCH (cnn) MIA_REFERENCES (16)
#   MIA_ATTACKS (loss,confidence,entropy,modified-entropy,shadow,lira-offline,lira-online) ART_MIA_MODELS (nn,rf,gb)
#   BADNETS_TRAIN (20000) BADNETS_FRACTION (0.10) BADNETS_EPOCHS (5) BADNETS_TARGET (0)
#   POISON_METHODS (activation-clustering,spectral-signature,knn,confident-learning) ART_POISON_LAYERS (penultimate)
#   BUDGETS (500,1000,5000) EXTRACT_EPOCHS (10) EXTRACT_STRATEGIES (natural,adaptive,random) TEST_LIMIT (2000)
#   AEGIS_MIA_ARGS, AEGIS_POISON_ARGS, AEGIS_EXTRACT_ARGS: extra flags appended to each aegis call.
set -u -o pipefail

HERE=$(dirname "$(realpath "$0")")
ROOT=$(dirname "$(dirname "$HERE")")
AEGIS=${AEGIS:-$ROOT/build/aegis}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
OUT=${OUT:-/tmp/aegis-privacy-bench}
export ART_PATH=${ART_PATH:-/tmp/art}
PYTHON=${PYTHON:-/usr/bin/python3}
THREADS=${THREADS:-2}
SEED=${SEED:-0}
PHASES=${PHASES:-"mia poison extract"}
SIDES=${SIDES:-"art aegis"}
SUMMARY_ONLY=${SUMMARY_ONLY:-0}
REBUILD=${REBUILD:-0}
MIA_MEMBERS=${MIA_MEMBERS:-5000}
MIA_NONMEMBERS=${MIA_NONMEMBERS:-5000}
MIA_EPOCHS=${MIA_EPOCHS:-60}
MIA_ARCH=${MIA_ARCH:-cnn}
MIA_REFERENCES=${MIA_REFERENCES:-16}
MIA_ATTACKS=${MIA_ATTACKS:-loss,confidence,entropy,modified-entropy,shadow,lira-offline,lira-online}
ART_MIA_MODELS=${ART_MIA_MODELS:-nn,rf,gb}
BADNETS_TRAIN=${BADNETS_TRAIN:-20000}
BADNETS_FRACTION=${BADNETS_FRACTION:-0.10}
BADNETS_EPOCHS=${BADNETS_EPOCHS:-5}
BADNETS_TARGET=${BADNETS_TARGET:-0}
POISON_METHODS=${POISON_METHODS:-activation-clustering,spectral-signature,knn,confident-learning}
ART_POISON_LAYERS=${ART_POISON_LAYERS:-penultimate}
BUDGETS=${BUDGETS:-500,1000,5000}
EXTRACT_EPOCHS=${EXTRACT_EPOCHS:-10}
EXTRACT_STRATEGIES=${EXTRACT_STRATEGIES:-natural,adaptive,random}
TEST_LIMIT=${TEST_LIMIT:-2000}
EXTRACT_TARGET=${EXTRACT_TARGET:-$ROOT/examples/fashion-mnist/model.pt}
EXTRACT_SURROGATE=${EXTRACT_SURROGATE:-$ROOT/examples/fashion-mnist/model_init.pt}
# aegis pins OpenBLAS to one thread itself; the Python side gets the same (a stock process would start
# OpenBLAS threads next to torch's OpenMP pool and oversubscribe 2 cores; see bench/art/README.md)
export OPENBLAS_NUM_THREADS=1

mkdir -p "$OUT/time" "$OUT/logs"
OUT=$(realpath "$OUT")
MIA_DIR=$OUT/mia-target
BAD_DIR=$OUT/badnets

has() { case " $1 " in *" $2 "*) return 0;; esac; return 1; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

idle_pct() {  # % of CPU time idle over the next 2 s (all cores, /proc/stat)
    local a b
    a=$(awk '/^cpu /{print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat)
    sleep 2
    b=$(awk '/^cpu /{print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat)
    echo "$a $b" | awk '{d = $4 - $2; print (d > 0) ? int(100 * ($3 - $1) / d) : 100}'
}

wait_quiet() {
    [ "${QUIET_WAIT:-0}" -gt 0 ] || return 0
    local waited=0 idle
    while idle=$(idle_pct); [ "$idle" -lt "${QUIET_IDLE:-90}" ] && [ $waited -lt "$QUIET_WAIT" ]; do
        [ $waited = 0 ] && echo "  waiting for a quiet machine (idle $idle%) ..." >&2
        sleep 8; waited=$((waited + 10))
    done
}

# timed STEP STDOUT_FILE MAX_RC cmd...: /usr/bin/time -v into time/STEP.txt, stderr into logs/STEP.log
timed() {
    local step=$1 stdout=$2 max_rc=$3; shift 3
    wait_quiet
    local before; before=$(load)
    echo "[$step] $(date +%T) load $before: $*" >&2
    /usr/bin/time -v -o "$OUT/time/$step.txt" "$@" > "$stdout" 2> "$OUT/logs/$step.log"
    local rc=$?
    printf '%s\t%s\t%s\t%s\n' "$step" "$before" "$(load)" "$rc" >> "$OUT/load.tsv"
    local wall; wall=$(awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$OUT/time/$step.txt" 2>/dev/null)
    echo "[$step] rc $rc, wall $wall" >&2
    if [ "$rc" -gt "$max_rc" ]; then
        echo "[$step] FAILED (rc $rc); last lines of $OUT/logs/$step.log:" >&2
        tail -n 15 "$OUT/logs/$step.log" >&2
        return 1
    fi
}


if [ "$SUMMARY_ONLY" != 1 ]; then
    if has "$SIDES" art; then
        [ -f "$ART_PATH/art/__init__.py" ] || { echo "missing ART source tree in $ART_PATH (see bench/privacy/README.md)" >&2; exit 2; }
    fi
    if has "$SIDES" aegis; then
        [ -x "$AEGIS" ] || { echo "missing $AEGIS (cmake --build build --target aegis_cli, or set AEGIS=...)" >&2; exit 2; }
        "$AEGIS" --version > "$OUT/aegis_version.txt" 2>&1 || true
    fi
    : > "$OUT/load.tsv"
    art_commit=unknown
    for g in /work/.mirror/Trusted-AI+adversarial-robustness-toolbox/repo "$ART_PATH/.git"; do
        [ -d "$g" ] && art_commit=$(git --git-dir="$g" log -1 --format='%H %cs' 2>/dev/null) && break
    done
    "$PYTHON" - "$OUT/meta.json" "$art_commit" "$THREADS" "$PHASES" "$SIDES" <<'EOF'
import json, os, platform, sys, time
sys.path.insert(0, os.environ["ART_PATH"])
try:
    import art
    art_version = art.__version__
except Exception:
    art_version = None
import torch, numpy, sklearn
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
json.dump({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host_cpus": os.cpu_count(), "cpu": cpu,
           "kernel": platform.release(), "python": platform.python_version(), "torch": torch.__version__,
           "numpy": numpy.__version__, "sklearn": sklearn.__version__, "art_version": art_version,
           "art_commit": sys.argv[2], "threads": int(sys.argv[3]), "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
           "phases": sys.argv[4], "sides": sys.argv[5]}, open(sys.argv[1], "w"), indent=2)
EOF
    echo "compare_privacy: phases '$PHASES', sides '$SIDES', results in $OUT" >&2

    for phase in $PHASES; do
        case $phase in
        mia)
            if [ "$REBUILD" = 1 ] || [ ! -s "$MIA_DIR/target.pt" ]; then
                timed make_mia_target "$OUT/logs/make_mia_target.json" 0 \
                    "$PYTHON" "$HERE/make_mia_target.py" --out "$MIA_DIR" --data "$DATA" --members "$MIA_MEMBERS" \
                    --nonmembers "$MIA_NONMEMBERS" --epochs "$MIA_EPOCHS" --arch "$MIA_ARCH" --seed "$SEED" \
                    --threads "$THREADS" || exit 1
            fi
            # art_mia.py also writes the evaluation half that both sides are scored on: run it first
            if has "$SIDES" art || [ ! -s "$MIA_DIR/eval_members.npy" ]; then
                timed art_mia "$OUT/art_mia.json" 0 \
                    "$PYTHON" "$HERE/art_mia.py" --dir "$MIA_DIR" --data "$DATA" --models "$ART_MIA_MODELS" --seed "$SEED" \
                    --threads "$THREADS" || exit 1
            fi
            if has "$SIDES" aegis; then
                mkdir -p "$OUT/mia"
                # shellcheck disable=SC2086
                timed aegis_mia "$OUT/aegis_mia.json" 1 \
                    "$AEGIS" mia --model "$MIA_DIR/target.pt" --data "$DATA" --members "$MIA_DIR/members.npy" \
                    --nonmembers "$MIA_DIR/nonmembers.npy" --attacks "$MIA_ATTACKS" --references "$MIA_REFERENCES" \
                    --recipe "$MIA_DIR/recipe.yaml" --output-dir "$OUT/mia" --format json ${AEGIS_MIA_ARGS:-} \
                    && "$PYTHON" "$HERE/metrics_from_scores.py" --scores "$OUT/mia/scores.csv" \
                        --members-eval "$MIA_DIR/eval_members.npy" --nonmembers-eval "$MIA_DIR/eval_nonmembers.npy" \
                        --out "$OUT/aegis_mia_metrics.json" > /dev/null 2> "$OUT/logs/metrics_from_scores.log" \
                    || echo "[aegis_mia] no metrics (see $OUT/logs)" >&2
            fi;;
        poison)
            if [ "$REBUILD" = 1 ] || [ ! -s "$BAD_DIR/model.pt" ]; then
                timed make_badnets "$OUT/logs/make_badnets.json" 0 \
                    "$PYTHON" "$HERE/make_badnets.py" --out "$BAD_DIR" --data "$DATA" --fraction "$BADNETS_FRACTION" \
                    --target-class "$BADNETS_TARGET" --train "$BADNETS_TRAIN" --epochs "$BADNETS_EPOCHS" \
                    --seed "$SEED" --threads "$THREADS" || exit 1
            fi
            if has "$SIDES" art; then
                timed art_poison "$OUT/art_poison.json" 0 \
                    "$PYTHON" "$HERE/art_poison.py" --dir "$BAD_DIR" --fraction "$BADNETS_FRACTION" --layer "$ART_POISON_LAYERS" \
                    --seed "$SEED" --threads "$THREADS" || exit 1
            fi
            if has "$SIDES" aegis; then
                # shellcheck disable=SC2086
                timed aegis_poison "$OUT/aegis_poison.json" 1 \
                    "$AEGIS" poison --model "$BAD_DIR/model.pt" --data "$BAD_DIR/poisoned.npz" \
                    --methods "$POISON_METHODS" --expected-fraction "$BADNETS_FRACTION" --truth "$BAD_DIR/truth.npy" \
                    --format json ${AEGIS_POISON_ARGS:-} || true
            fi;;
        extract)
            if has "$SIDES" art; then
                timed art_extract "$OUT/art_extract.json" 0 \
                    "$PYTHON" "$HERE/art_extract.py" --target "$EXTRACT_TARGET" --surrogate "$EXTRACT_SURROGATE" --data "$DATA" \
                    --budgets "$BUDGETS" --epochs "$EXTRACT_EPOCHS" --batch 64 --lr 1e-3 --test-limit "$TEST_LIMIT" \
                    --seed "$SEED" --threads "$THREADS" || exit 1
            fi
            if has "$SIDES" aegis; then
                mkdir -p "$OUT/extract"
                # shellcheck disable=SC2086
                timed aegis_extract "$OUT/aegis_extract.json" 1 \
                    "$AEGIS" extract --target "$EXTRACT_TARGET" --surrogate "$EXTRACT_SURROGATE" --data "$DATA" \
                    --budget "$BUDGETS" --strategy "$EXTRACT_STRATEGIES" --epochs "$EXTRACT_EPOCHS" \
                    --train-batch 64 --lr 1e-3 --test-limit "$TEST_LIMIT" --query-log "$OUT/extract/queries" \
                    --format json ${AEGIS_EXTRACT_ARGS:-} || true
            fi;;
        *) echo "unknown phase $phase" >&2; exit 2;;
        esac
    done
fi

"$PYTHON" "$HERE/summarise.py" "$OUT" | tee "$OUT/summary.md"
