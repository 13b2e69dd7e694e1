#!/usr/bin/env bash
# The dashboard's page-latency benchmark (issue 13: "loads a store with 100,000 findings and answers
# every page in under 200 ms"). Builds nothing: build first with
#   cmake --build build --target aegis aegis_seed_store web_page_latency
# Seeds a store with FINDINGS findings in a temporary folder, adds an admin user, starts
# `aegis serve` on a free loopback port, times every page's API calls with web_page_latency and stops
# the server. Exit status: web_page_latency's (1 when a call took over 200 ms or was not 2xx).
#
#   bench/web/run.sh                 # 100,000 findings, 20 repeats
#   FINDINGS=1000000 REPEAT=5 bench/web/run.sh
#   AEGIS=build-release/aegis BENCH_DIR=build-release/bench bench/web/run.sh
set -euo pipefail

AEGIS=${AEGIS:-build/aegis}
BENCH_DIR=${BENCH_DIR:-build/bench}
FINDINGS=${FINDINGS:-100000}
ASSETS=${ASSETS:-50}
REPEAT=${REPEAT:-20}
SEED=${SEED:-1}

for tool in "$AEGIS" "$BENCH_DIR/aegis_seed_store" "$BENCH_DIR/web_page_latency"; do
  if [[ ! -x $tool ]]; then
    echo "run.sh: $tool is missing; build it first (cmake --build build --target aegis aegis_seed_store web_page_latency)" >&2
    exit 2
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/aegis-web-bench.XXXXXX")
server_pid=""
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

store=$work/store.db
echo "== seeding $FINDINGS findings over $ASSETS assets (seed $SEED)"
"$BENCH_DIR/aegis_seed_store" --store "$store" --findings "$FINDINGS" --assets "$ASSETS" --seed "$SEED"
ls -l "$store" | awk '{printf "store file: %.1f MB\n", $5 / 1048576}'

password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 24)
printf '%s\n' "$password" | "$AEGIS" users add bench --role admin --store "$store" >/dev/null

# The server prints "listening on http://127.0.0.1:PORT" once it accepts connections.
fifo=$work/serve.out
mkfifo "$fifo"
"$AEGIS" serve --store "$store" --listen 127.0.0.1:0 >"$fifo" 2>"$work/serve.err" &
server_pid=$!
exec 3<"$fifo"
url=""
start=$SECONDS
while [[ -z $url ]]; do
  if ! IFS= read -r -t 60 line <&3; then
    echo "run.sh: aegis serve did not print 'listening on http://...' within 60 s; its stderr:" >&2
    cat "$work/serve.err" >&2
    exit 1
  fi
  if [[ $line =~ listening\ on\ (http://[^[:space:]]+) ]]; then url=${BASH_REMATCH[1]}; fi
done
# keep draining the server's stdout so that it never blocks on a full pipe
cat <&3 >/dev/null &
echo "== aegis serve ready at $url after $((SECONDS - start)) s"

status=0
"$BENCH_DIR/web_page_latency" --url "$url" --user bench --password "$password" --repeat "$REPEAT" || status=$?
exit $status
