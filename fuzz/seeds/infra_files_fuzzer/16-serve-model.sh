#!/bin/bash
# served on loopback; the gateway in front authenticates
mlflow models serve -m "models:/fraud-detector/Production" -p 5001 --env-manager local
