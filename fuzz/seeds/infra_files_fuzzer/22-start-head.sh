#!/bin/bash
ulimit -n 65536
ray start --head --port=6379 --dashboard-host=0.0.0.0 --dashboard-port=8265 \
  --node-ip-address 0.0.0.0 --num-gpus=8 --block
