#!/usr/bin/env bash
# Static-review throughput of `aegis audit-infra`: a synthetic monorepo made of COPIES copies of the
# test cases (Dockerfiles, Compose, Kubernetes, properties, scripts, CI workflows) plus notebooks
# written by nbformat, reviewed whole. Prints files/s and MB/s, and the time of the file walk alone
# (a folder of the same files under names no reader claims) to show where the time goes.
#   bench/infra/run.sh [COPIES=400] [BUILD=build]
set -euo pipefail
cd "$(dirname "$0")/../.."
COPIES=${1:-400}
BUILD=${2:-build}
WORK=$(mktemp -d /tmp/aegis-infra-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

/usr/bin/python3 - "$WORK" "$COPIES" <<'PY'
import os, shutil, sys, nbformat
from nbformat.v4 import new_notebook, new_code_cell, new_output
work, copies = sys.argv[1], int(sys.argv[2])
src = "tests/infra/cases"
for i in range(copies):
    shutil.copytree(src, f"{work}/repo/svc{i:04d}", ignore=shutil.ignore_patterns("cases.yaml", "malformed"))
    nb = new_notebook()
    nb.cells = [new_code_cell("import pandas as pd\ndf = pd.read_csv('users.csv')\ndf.head()", execution_count=1,
        outputs=[new_output("execute_result", execution_count=1, data={"text/plain": "\n".join(
            f"{r}  user{r}@mail.example.net  churn={r % 2}" for r in range(40))})])]
    nbformat.write(nb, f"{work}/repo/svc{i:04d}/explore.ipynb")
# the same bytes under names no reader claims: the walk and the reads alone
for root, _, files in os.walk(f"{work}/repo"):
    for f in files:
        rel = os.path.relpath(os.path.join(root, f), f"{work}/repo")
        dst = os.path.join(f"{work}/plain", rel.replace(os.sep, "_") + ".txt")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(root, f), dst)
PY

files=$(find "$WORK/repo" -type f | wc -l)
bytes=$(du -sb "$WORK/repo" | cut -f1)
echo "synthetic repository: $files files, $((bytes / 1024)) KiB"
for run in 1 2 3; do
  start=$(date +%s.%N)
  "./$BUILD/aegis" audit-infra "$WORK/repo" --format json --quiet -o "$WORK/report.json" || true
  end=$(date +%s.%N)
  python3 - "$start" "$end" "$files" "$bytes" "$WORK/report.json" <<'PY'
import json, sys
start, end, files, size, report = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
d = json.load(open(report)); t = end - start
print(f"  review: {t:.2f} s, {files / t:.0f} files/s, {size / t / 1e6:.2f} MB/s, {len(d['findings'])} findings")
PY
done
start=$(date +%s.%N)
"./$BUILD/aegis" audit-infra "$WORK/plain" --format json --quiet -o /dev/null || true
end=$(date +%s.%N)
echo "  walk only (same bytes, no reader): $(python3 -c "print(f'{$end - $start:.2f}')") s"
