#!/usr/bin/env bash
# The shipped federated experiment: Fashion-MNIST split non-IID (Dirichlet alpha 0.5) across 10
# participants, each its own `aegis federated join` process on loopback with its own certificate.
#   1. centralised: the same model and trainer, one participant holding all the data
#   2. FedAvg over the 10 participants (and FedProx)
#   3. secure aggregation, and secure aggregation with 2 participants dropping out every round
#   4. 2 of 10 participants poisoned (trigger backdoor, update boosted): mean vs norm bound,
#      median, trimmed mean, multi-Krum, with accuracy and the backdoor success rate of each
# Usage: bench/federated/experiment.sh [ROUNDS] [MODEL]   (defaults 20 and an MLP 784-128-10 that
# PyTorch writes here; examples/fashion-mnist/model_init.pt, the CNN, costs about 20x the CPU time)
# Writes build/bench/federated/results.md (the table in bench/RESULTS.md) and every run's JSON report.
set -euo pipefail
cd "$(dirname "$0")/../.."
AEGIS=${AEGIS:-$PWD/build/aegis}
ROUNDS=${1:-20}
N=10
DATA=/usr/share/datasets/fashion-mnist
OUT=$PWD/build/bench/federated
mkdir -p "$OUT"
if [ -n "${2:-}" ]; then
  MODEL=$(realpath "$2")
else
  MODEL=$OUT/mlp.pt
  /usr/bin/python3 -c "import torch, torch.nn as nn; torch.manual_seed(0); torch.jit.script(nn.Sequential(nn.Flatten(),
    nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))).save('$MODEL')"
fi
PKI=$OUT/pki
[ -f "$PKI/ca.pem" ] || "$AEGIS" federated init --dir "$PKI" --participants $N > /dev/null
LR=${LR:-0.05}

# config NAME PARTICIPANTS EXTRA-YAML
config() {
  local dir=$OUT/$1
  rm -rf "$dir" && mkdir -p "$dir"
  cat > "$dir/fl.yaml" <<EOF
federation: {pki: $PKI, listen: 127.0.0.1:0, state: $dir/state, population: $2}
model: {torchscript: $MODEL, input_shape: [1, 28, 28]}
training: {rounds: $ROUNDS, participants_per_round: $2, min_participants: ${MIN:-$2}, round_deadline_s: ${DEADLINE:-60},
           local_epochs: 1, batch: 32, optimizer: sgd, learning_rate: $LR, algorithm: ${ALGORITHM:-fedavg}}
evaluation: {data: $DATA, split: test, backdoor_target: 0}
$3
EOF
}

# run NAME PARTICIPANTS [per-participant extra flags via function participant_flags I]
run() {
  local name=$1 n=$2 dir=$OUT/$1
  local port
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local start=$(date +%s.%N)
  "$AEGIS" federated serve --config "$dir/fl.yaml" --listen 127.0.0.1:$port --format json --output "$dir/report.json" \
    --fail-on critical 2> "$dir/aggregator.log" &
  local server=$!
  local pids=()
  for ((i = 0; i < n; i++)); do
    local partition=()
    [ "$n" -gt 1 ] && partition=(--partition $i/$n --partition-scheme dirichlet --alpha 0.5 --partition-seed 7)
    # shellcheck disable=SC2046
    "$AEGIS" federated join --aggregator 127.0.0.1:$port --pki "$PKI" --id participant-$i --model "$MODEL" \
      --data $DATA "${partition[@]}" $(participant_flags $name $i) 2> "$dir/participant-$i.log" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  wait $server || true
  local end=$(date +%s.%N)
  /usr/bin/python3 - "$dir/report.json" "$name" "$(echo "$end - $start" | bc)" >> "$OUT/results.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rounds = r["rounds"]
per_round = sum(x["seconds"] for x in rounds) / len(rounds)
wire = sum(x["bytes_received"] + x["bytes_sent"] for x in rounds) / len(rounds)
fmt = lambda v: "-" if v is None else f"{100 * v:.2f}"
findings = len(r["findings"])
print(f"| {sys.argv[2]} | {fmt(r.get('final_accuracy'))} | {fmt(r.get('final_backdoor_success'))} | "
      f"{per_round:.2f} | {wire / 1e6:.2f} | {findings} | {float(sys.argv[3]):.0f} |")
PY
  tail -1 "$OUT/results.md"
}

participant_flags() {
  local name=$1 i=$2
  case $name in
    poisoned-*) [ "$i" -ge 8 ] && echo "--poison backdoor --backdoor-target 0 --backdoor-fraction 0.5 --boost 10" ;;
    secure-dropouts) [ "$i" -ge 8 ] && echo "--drop-at-round 1 --drop-at-stage masked" ;;
  esac
  return 0
}

echo "| run | accuracy % | backdoor success % | s / round | MB on the wire / round | findings | wall s |" > "$OUT/results.md"
echo "| --- | --- | --- | --- | --- | --- | --- |" >> "$OUT/results.md"

config centralised 1 ""
run centralised 1
config fedavg $N ""
run fedavg $N
ALGORITHM=fedprox config fedprox $N ""
run fedprox $N
config secure $N "secure_aggregation: {enabled: true, threshold: 0.6, clip: 0.5}"
run secure $N
MIN=8 DEADLINE=20 config secure-dropouts $N "secure_aggregation: {enabled: true, threshold: 0.6, clip: 0.5}"
run secure-dropouts $N
config poisoned-mean $N ""
run poisoned-mean $N
config poisoned-norm-bound $N "robust: {rule: mean, norm_bound: 1.0}"
run poisoned-norm-bound $N
config poisoned-median $N "robust: {rule: median}"
run poisoned-median $N
config poisoned-trimmed-mean $N "robust: {rule: trimmed-mean, trim_fraction: 0.2}"
run poisoned-trimmed-mean $N
config poisoned-multi-krum $N "robust: {rule: multi-krum, byzantine: 2}"
run poisoned-multi-krum $N
if [ -x build/bench/secagg_round ]; then
  echo "== secure aggregation alone: one round in process, 10 and 50 participants" | tee -a "$OUT/results.md"
  build/bench/secagg_round "$(/usr/bin/python3 -c "import torch; print(sum(p.numel() for p in torch.jit.load('$MODEL').parameters()))")" 10 50 \
    | tee -a "$OUT/results.md"
fi
echo "results: $OUT/results.md"
