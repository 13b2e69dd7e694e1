#!/bin/bash
# Hashing speed of the manifest engine (issue 4, point 5) against the machine's SHA-256 limit:
# OpenSSL's single-core `openssl speed -evp sha256` times the cores. Runs on a page-cached folder
# and, where the kernel lets us drop caches (root), on a cold one.
#   bench/hash_bench.sh [FOLDER] [GB]     (default: a new folder of GB=4 GB in /work/bench-data/hash)
set -u -o pipefail
HERE=$(dirname "$(realpath "$0")")
BIN=${HASH_FOLDER:-$(dirname "$HERE")/build/bench/hash_folder}
DIR=${1:-/work/bench-data/hash}
GB=${2:-4}
[ -x "$BIN" ] || { echo "build first: make build (needs $BIN)" >&2; exit 2; }
if [ ! -d "$DIR" ]; then
    mkdir -p "$DIR"
    echo "writing $GB GB of random files to $DIR" >&2
    for i in $(seq 1 $((GB * 2))); do head -c 500000000 /dev/urandom > "$DIR/shard-$i.bin"; done
fi
cores=$(nproc)
per_core=$(openssl speed -evp sha256 -seconds 2 -bytes 16384 2>/dev/null | awk '/^sha256/ {print $NF}' | tr -d k)
limit=$(awk "BEGIN{printf \"%.2f\", $per_core * 1000 * $cores / 1e9}")
echo "machine limit: openssl speed -evp sha256 (16 KiB blocks) $(awk "BEGIN{printf \"%.2f\", $per_core*1000/1e9}") GB/s per core x $cores cores = $limit GB/s"
find "$DIR" -type f -exec cat {} + > /dev/null
for method in files shards; do
    line=$("$BIN" "$DIR" "$method")
    rate=$(echo "$line" | awk '{print $(NF-3)}')
    echo "warm ($method): $line  -> $(awk "BEGIN{printf \"%.0f\", 100 * $rate / $limit}")% of the limit"
done
if sync && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then
    line=$("$BIN" "$DIR" files)
    rate=$(echo "$line" | awk '{print $(NF-3)}')
    echo "cold (files): $line  -> $(awk "BEGIN{printf \"%.0f\", 100 * $rate / $limit}")% of the limit"
else
    echo "cold: cannot drop the page cache here (needs root); run as root for the cold figure"
fi
