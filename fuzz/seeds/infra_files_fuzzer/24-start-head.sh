#!/bin/bash
ray start --head --port=6379 --num-gpus=8
ray start --address=ray-head:6379 --num-gpus=8 --block
