#!/bin/bash
# The detector's regex stage (Hyperscan, Detector::count_candidates) against Python's `re` running
# the same rule patterns (bench/pii/python_re_baseline.py), on one core each, in one run over one
# text of about 100 MB built from the labelled corpus (notes, configuration lines and CSV rows,
# repeated). Prints both, and the full detector (Detector::scan) for reference, as a Markdown table.
#
#   bench/pii/compare_regex.sh [MB]        default 100
#
# Environment: BENCH (default build/bench/pii_regex_bench), PYTHON (/usr/bin/python3),
# WORK (kept; default a new /tmp/aegis_pii_regex.*), REPEAT (count_candidates passes, 3),
# PY_REPEAT (Python passes, 1), PY_MB (Python matches only the first PY_MB MB; 0 = all, the default;
# its MB/s is a rate, so a slice gives the same figure sooner), SEED (11).
set -euo pipefail

MB=${1:-100}
HERE=$(dirname "$(realpath "$0")")
ROOT=$(dirname "$(dirname "$HERE")")
BENCH=${BENCH:-$ROOT/build/bench/pii_regex_bench}
PYTHON=${PYTHON:-/usr/bin/python3}
REPEAT=${REPEAT:-3}
PY_REPEAT=${PY_REPEAT:-1}
PY_MB=${PY_MB:-0}
SEED=${SEED:-11}
WORK=${WORK:-$(mktemp -d /tmp/aegis_pii_regex.XXXXXX)}
mkdir -p "$WORK"

[ -x "$BENCH" ] || { echo "compare_regex: $BENCH not built (cmake --build build --target pii_regex_bench, or set BENCH=...)" >&2; exit 2; }

# 1. The corpus and the text: notes, config lines and CSV rows (no header), repeated up to MB.
"$PYTHON" "$ROOT/tests/fixtures/pii_corpus.py" "$WORK/corpus" --rows 4000 --seed "$SEED" 2>/dev/null
chunk=$WORK/chunk.txt
{ cat "$WORK/corpus/notes.txt" "$WORK/corpus/config_snippets.txt"; tail -n +2 "$WORK/corpus/customers.csv"; } > "$chunk"
target=$((MB * 1000000))
size=$(stat -c %s "$chunk")
copies=$(( (target + size - 1) / size ))
text=$WORK/text.txt
for _ in $(seq "$copies"); do cat "$chunk"; done > "$text"
truncate -s "$target" "$text"
echo "compare_regex: $(stat -c %s "$text") bytes in $text ($copies copies of a $size-byte chunk)" >&2

# 2. Both engines, one after the other, on this machine.
"$BENCH" "$text" --repeat "$REPEAT" > "$WORK/aegis.txt"
cat "$WORK/aegis.txt" >&2
py_args=(--repeat "$PY_REPEAT" --quiet)
[ "$PY_MB" != 0 ] && py_args+=(--max-mb "$PY_MB")
"$PYTHON" "$HERE/python_re_baseline.py" "$text" "${py_args[@]}" > "$WORK/python.txt"
cat "$WORK/python.txt" >&2

# 3. The table.
field() { grep "^engine=$1 " "$2" | tr ' ' '\n' | sed -n "s/^$3=//p"; }
py_mbps=$(field python-re "$WORK/python.txt" mbps)
row() {  # label engine file what
    local bytes seconds mbps
    bytes=$(field "$2" "$3" bytes); seconds=$(field "$2" "$3" seconds); mbps=$(field "$2" "$3" mbps)
    [ -n "$mbps" ] || return 0
    awk -v l="$1" -v b="$bytes" -v s="$seconds" -v m="$mbps" -v p="$py_mbps" -v w="$4" \
        'BEGIN { printf "| %s | %s | %.1f | %.2f | %.1f | %.1fx |\n", l, w, b / 1e6, s, m, m / p }'
}
cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
echo
echo "PII/secret rule patterns over $MB MB of corpus text, one core each ($cpu)"
echo
echo "| engine | stage | MB | seconds | MB/s | ratio to Python re |"
echo "|---|---|---:|---:|---:|---:|"
row "Python re ($(field python-re "$WORK/python.txt" rules) patterns)" python-re "$WORK/python.txt" "regex only"
row "Aegis, Hyperscan ($(field aegis-hyperscan "$WORK/aegis.txt" rules) rules)" aegis-hyperscan "$WORK/aegis.txt" "regex only (count_candidates)"
row "Aegis, full detector" aegis-scan "$WORK/aegis.txt" "scan() line by line: validators, context"
skipped=$(field python-re "$WORK/python.txt" skipped)
[ "${skipped:-0}" != 0 ] && echo && echo "Python could not compile $skipped rule(s); see python_re_baseline.py's stderr (rerun it without --quiet)."
echo
echo "Raw outputs in $WORK"
