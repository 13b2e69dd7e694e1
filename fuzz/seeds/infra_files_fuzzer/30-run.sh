#!/bin/sh
torchserve --start --ncs --model-store /home/model-server/model-store --ts-config config.properties --disable-token-auth
