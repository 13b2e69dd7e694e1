#!/bin/sh
# Input-guard latency on one core (4 KB prompts: benign rows, attack rows, both) and the quality
# tables (held-out split, 5-fold cross-validation, leave-one-source-out) on ../shared/data/llm.
#   bench/guard/run.sh [BUILD_DIR]
# Reference figures (not run here: no PyPI, no transformer weights on these machines): LLM Guard's
# DeBERTa-v3 prompt-injection scanner takes 104-213 ms per prompt on a CPU; Meta Prompt Guard 2
# scores 78.8% on PINT, Lakera 95.2% (PINT is proprietary; its rows are excluded from our data).
set -eu
build=${1:-build}
data=$(dirname "$0")/../../../shared/data/llm/combined/pi_jailbreak_eval.jsonl
[ -f "$data" ] || { echo "labelled data not found at $data" >&2; exit 2; }
for label in 0 1 -1; do
  taskset -c 0 "$build/bench/guard_latency" "$data" --bytes 4096 --calls 20000 --label "$label"
done
for bytes in 512 16384; do
  taskset -c 0 "$build/bench/guard_latency" "$data" --bytes "$bytes" --calls 5000
done
"$build/aegis" guard eval --data "$data" --data "$(dirname "$0")/../../data/guard/hard_negatives.jsonl" --method all
