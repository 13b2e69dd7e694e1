#!/usr/bin/env bash
# The engagement at scale: threat-model an inventory of thousands of assets, then run its scan jobs
# here (--parallel) and on two `aegis worker`s through Redis Streams, then re-run with nothing
# changed (every job reused). Usage: bench/assess/run.sh [ASSETS] [JOBS]   (defaults 5000 and 300)
set -euo pipefail
cd "$(dirname "$0")/../.."
AEGIS=${AEGIS:-build/aegis}
ASSETS=${1:-5000}
JOBS=${2:-300}
work=$(mktemp -d /tmp/aegis-assess-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
/usr/bin/python3 - "$work" "$ASSETS" "$JOBS" <<'PY'
import os, sys, shutil
work, assets, jobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(f"{work}/models")
src = open("examples/state_dict.pt", "rb").read()
def inventory(path, n, files):
    with open(path, "w") as f:
        f.write("assets:\n")
        for i in range(n):
            kind = ("model", "dataset", "endpoint", "pipeline")[i % 4] if not files else "model"
            if kind == "model":
                model = f"models/m{i}.pt"
                if files:
                    # distinct bytes, distinct digests: every model is its own scan job
                    open(f"{work}/{model}", "wb").write(src + str(i).encode())
                f.write(f"  - {{id: m{i}, kind: model, files: [{model}], exposure: {'external' if i % 3 == 0 else 'internal'}}}\n")
            elif kind == "dataset":
                f.write(f"  - {{id: d{i}, kind: dataset, files: [data/d{i}.csv], sensitivity: [pii], source: internal}}\n")
            elif kind == "endpoint":
                f.write(f"  - {{id: e{i}, kind: endpoint, url: 'http://10.0.0.{i % 250}/v1', api: openai-chat}}\n")
            else:
                f.write(f"  - {{id: p{i}, kind: pipeline, stage: serving, files: [deploy/p{i}]}}\n")
inventory(f"{work}/big.yaml", assets, False)
inventory(f"{work}/jobs.yaml", jobs, True)
PY
t() { local s=$(date +%s.%N); "$@" > /dev/null 2>&1 || true; echo "$(echo "$(date +%s.%N) - $s" | bc)"; }
echo "== threat model of $ASSETS assets"
echo "inventory validate: $(t $AEGIS inventory validate "$work/big.yaml") s"
echo "threat-model (json): $(t $AEGIS threat-model "$work/big.yaml" --format json --quiet) s"
echo "== $JOBS scan jobs (one per model file), this machine: $(nproc) cores"
echo "assess --parallel $(nproc): $(t $AEGIS assess "$work/jobs.yaml" --store "$work/local.db" --checks scan --parallel "$(nproc)" --quiet --format json) s"
echo "assess again, nothing changed (all reused): $(t $AEGIS assess "$work/jobs.yaml" --store "$work/local.db" --checks scan --quiet --format json) s"
port=$((20000 + RANDOM % 20000))
redis-server --port $port --save '' --appendonly no > "$work/redis.log" 2>&1 &
sleep 0.5
for w in 1 2; do $AEGIS worker --queue redis://127.0.0.1:$port --store "$work/shared.db" --quiet & done
echo "assess --workers (2 workers, shared SQLite store): $(t $AEGIS assess "$work/jobs.yaml" --store "$work/shared.db" --checks scan --workers redis://127.0.0.1:$port --quiet --format json) s"
