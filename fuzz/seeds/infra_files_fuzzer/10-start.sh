#!/usr/bin/env bash
# Start the team's GPU notebook box.
set -euo pipefail
export SHELL=/bin/bash
cd /workspace
exec jupyter lab --ip=0.0.0.0 --port=8888 --no-browser --allow-root \
  --ServerApp.token='' --ServerApp.password='' --ServerApp.root_dir=/workspace
