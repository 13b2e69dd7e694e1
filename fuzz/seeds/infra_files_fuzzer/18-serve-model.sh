#!/bin/bash
mlflow models serve -m "models:/fraud-detector/Production" -h 0.0.0.0 -p 5001 --env-manager local
