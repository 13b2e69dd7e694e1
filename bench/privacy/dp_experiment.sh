#!/bin/bash
# The privacy-utility table of DP-SGD on the real Fashion-MNIST: accuracy at epsilon 1, 3, 8 and
# infinity (no noise), and what LiRA (aegis mia, online, reference models trained without privacy)
# still finds at each epsilon.
#
#   bench/privacy/dp_experiment.sh            # MLP, 2000 training records, 60 epochs, 8 reference models
#   ARCH=cnn N=20000 REFS=16 bench/privacy/dp_experiment.sh
#
# Writes every JSON report into $OUT and prints a Markdown table (bench/privacy/dp_table.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
AEGIS=${AEGIS:-build/aegis}
OUT=${OUT:-/tmp/aegis-dp-experiment}
ARCH=${ARCH:-mlp}
N=${N:-2000}
EPOCHS=${EPOCHS:-60}
BATCH=${BATCH:-256}
LR=${LR:-0.5}
CLIP=${CLIP:-1.0}
REFS=${REFS:-8}
EPSILONS=${EPSILONS:-"1 3 8 inf"}
DELTA=${DELTA:-1e-5}

mkdir -p "$OUT"
/usr/bin/python3 bench/privacy/make_dp_models.py "$OUT" "$N" "$EPOCHS"
for eps in $EPSILONS; do
  if [ "$eps" = inf ]; then noise=(--noise-multiplier 0); else noise=(--target-epsilon "$eps"); fi
  echo "== DP-SGD at epsilon $eps ($ARCH, $N records, $EPOCHS epochs)" >&2
  "$AEGIS" train-dp --model "$OUT/${ARCH}_init.pt" --split train --limit "$N" "${noise[@]}" --delta "$DELTA" \
    --epochs "$EPOCHS" --expected-batch "$BATCH" --lr "$LR" --max-grad-norm "$CLIP" --seed 1 \
    --save "$OUT/dp_$eps.pt" --format json --fail-on critical > "$OUT/train_$eps.json"
  echo "== LiRA against it ($REFS reference models)" >&2
  "$AEGIS" mia --model "$OUT/dp_$eps.pt" --members "$OUT/members.npy" --recipe "$OUT/recipe-$ARCH.yaml" \
    --references "$REFS" --fpr 0.001,0.01 --bootstrap 100 --format json --fail-on critical > "$OUT/mia_$eps.json"
done
/usr/bin/python3 bench/privacy/dp_table.py "$OUT" $EPSILONS
