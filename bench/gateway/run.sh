#!/usr/bin/env bash
# Side by side on loopback: wrk against nginx proxying a model endpoint, and against `aegis gateway`
# proxying the same endpoint (no filters; then auth + rate limit + validation + output filters), with
# the same number of workers, in one run. Then two gateway processes sharing one rate limit through
# Redis. The upstream is an nginx server block that answers a fixed classifier JSON, so that neither
# proxy waits on a model.
#
#   bench/gateway/run.sh [BUILD_DIR] [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
SECONDS_EACH=${2:-10}
CONNS=${3:-50}
AEGIS=$PWD/$BUILD/aegis
[ -x "$AEGIS" ] || { echo "build aegis first (make build)"; exit 2; }
need=""
for p in wrk nginx redis-server; do command -v $p >/dev/null || need="$need $p"; done
if [ -n "$need" ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get install -y -q --no-install-recommends wrk nginx-light redis-server >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
WORK=$(mktemp -d /tmp/aegis-gw-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); NG=$(free_port); GW=$(free_port); GW2=$(free_port); RP=$(free_port)
ANSWER='{"probabilities":[[0.0123456,0.7012345,0.1,0.05,0.05,0.02,0.02,0.02,0.02,0.0164199]]}'

mkdir -p "$WORK/nginx/logs"
nginx_conf() {  # NAME SERVER_BLOCKS: one worker each, as the issue sets the comparison
  cat > "$WORK/nginx/$1.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx/$1.pid;
error_log $WORK/nginx/logs/$1.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  $2
}
CONF
}
# the model endpoint: a fixed classifier answer
nginx_conf upstream "server { listen 127.0.0.1:$UP; keepalive_requests 1000000;
    location / { default_type application/json; return 200 '$ANSWER'; } }"
# nginx as the reverse proxy under test
nginx_conf proxy "upstream model { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NG; keepalive_requests 1000000;
    location / { proxy_pass http://model; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/upstream.conf" & pids+=($!)
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/proxy.conf" & pids+=($!)

KEY=bench-key-0123456789
HASH=$(printf '%s\n' "$KEY" | "$AEGIS" gateway hash-key)
BODY=$(/usr/bin/python3 -c 'import json; print(json.dumps({"inputs": [[0.5]*32]}))')
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
LUA

gateway_config() {  # PORT FILTERS(yes|no) AUDIT(true|false) [REDIS_RATE]
  local filters=""
  if [ "$2" = yes ]; then
    filters="    filters:
      - api_key: {keys: [{id: bench, hash: '$HASH', roles: [scorer]}]}
      - rbac: {rules: [{methods: [POST], roles: [scorer]}]}
      - rate_limit: {per: key, rate: 1000000/s, burst: 100000}
      - body_limit: {max_bytes: 65536}
      - json_schema: {schema: {type: object, required: [inputs], properties: {inputs: {type: array, maxItems: 64, items: {type: array, maxItems: 1024, items: {type: number, minimum: 0, maximum: 1}}}}}}
      - confidence: {min_confidence: 0.2, action: flag}
      - output_hardening: {top_k: 3, decimals: 2}"
  fi
  if [ -n "${4:-}" ]; then
    filters="    filters:
      - rate_limit: {per: route, rate: $4/s, burst: 20, backend: redis}"
  fi
  cat <<YAML
listen: 127.0.0.1:$1
threads: 1
access_log: 'off'
audit: {enabled: $3, store: $WORK/store-$1.db}
$( [ -n "${4:-}" ] && echo "redis: {url: redis://127.0.0.1:$RP}" )
upstreams:
  model: {url: http://127.0.0.1:$UP, max_connections: 256}
routes:
  - name: predict
    path: /predict
    methods: [POST]
    upstream: model
    api: classifier
$filters
YAML
}

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened"; exit 1; }
run_wrk() {  # PORT -> "rps p50 p99 non2xx"
  wrk -t1 -c"$CONNS" -d"${SECONDS_EACH}s" --latency -s "$WORK/post.lua" "http://127.0.0.1:$1/predict" > "$WORK/wrk.out" 2>&1
  /usr/bin/python3 - "$WORK/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def lat(p):
    m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)" % p, t, re.M)
    if not m: return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
n = re.search(r"(\d+) requests in", t); non = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {lat(50):.3f} {lat(99):.3f} {non.group(1) if non else 0} {n.group(1)}")
PY
}
start_gateway() {  # PORT CONFIG_FILE
  "$AEGIS" gateway --config "$2" 2>"$WORK/gw-$1.err" & pids+=($!)
  wait_port "$1"
}

wait_port "$UP"; wait_port "$NG"
echo "machine: $(nproc) cores; wrk 1 thread, $CONNS connections, ${SECONDS_EACH}s per run; proxies with 1 worker"
printf "%-44s %10s %9s %9s %8s\n" "target" "req/s" "p50 ms" "p99 ms" "non-2xx"
res=$(run_wrk "$UP"); set -- $res; printf "%-44s %10s %9s %9s %8s\n" "upstream alone (nginx return 200)" $1 $2 $3 $4
res=$(run_wrk "$NG"); set -- $res; NGINX_RPS=$1; NGINX_P99=$3
printf "%-44s %10s %9s %9s %8s\n" "nginx 1 worker -> upstream" $1 $2 $3 $4
gateway_config "$GW" no false > "$WORK/plain.yaml"; start_gateway "$GW" "$WORK/plain.yaml"
res=$(run_wrk "$GW"); set -- $res; PLAIN_RPS=$1
printf "%-44s %10s %9s %9s %8s\n" "aegis gateway, no filters, no audit" $1 $2 $3 $4
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
gateway_config "$GW" no true > "$WORK/audit.yaml"; start_gateway "$GW" "$WORK/audit.yaml"
res=$(run_wrk "$GW"); set -- $res; AUDIT_RPS=$1
printf "%-44s %10s %9s %9s %8s\n" "aegis gateway, no filters, audit log on" $1 $2 $3 $4
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
gateway_config "$GW" yes true > "$WORK/filters.yaml"; start_gateway "$GW" "$WORK/filters.yaml"
res=$(run_wrk "$GW"); set -- $res; FILTER_RPS=$1; FILTER_P99=$3
printf "%-44s %10s %9s %9s %8s\n" "aegis gateway, 7 filters + audit" $1 $2 $3 $4
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
/usr/bin/python3 -c "
n=$NGINX_RPS; print(f'ratio no filters / nginx: {$PLAIN_RPS/n:.2f} (target >= 0.9); audit on: {$AUDIT_RPS/n:.2f}')
print(f'ratio filters+audit / nginx: {$FILTER_RPS/n:.2f} (target >= 0.7); added p99: {$FILTER_P99-$NGINX_P99:.3f} ms (target < 1 ms)')"

# Scale-out: two gateways, one Redis, one global limit.
redis-server --port "$RP" --save '' --appendonly no --bind 127.0.0.1 > "$WORK/redis.log" 2>&1 & pids+=($!)
wait_port "$RP"
RATE=2000
gateway_config "$GW" no false $RATE > "$WORK/r1.yaml"; start_gateway "$GW" "$WORK/r1.yaml"
gateway_config "$GW2" no false $RATE > "$WORK/r2.yaml"; start_gateway "$GW2" "$WORK/r2.yaml"
( run_wrk "$GW" > "$WORK/a.txt" ) & A=$!
( run_wrk "$GW2" > "$WORK/b.txt" ) & B=$!
wait $A $B
/usr/bin/python3 - "$WORK/a.txt" "$WORK/b.txt" $RATE $SECONDS_EACH <<'PY'
import sys
allowed = 0
for f in sys.argv[1:3]:
    rps, p50, p99, non2xx, total = open(f).read().split()
    allowed += int(total) - int(non2xx)
rate, secs = int(sys.argv[3]), int(sys.argv[4])
expected = rate * secs + 20
print(f"two gateways sharing {rate}/s through Redis for {secs}s: {allowed} allowed, expected {expected} "
      f"({100*(allowed-expected)/expected:+.1f}%, target within 5%)")
PY
