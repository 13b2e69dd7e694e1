#!/usr/bin/python3
"""Untrained TorchScript models and the LiRA recipe for the DP-SGD privacy-utility experiment.

    /usr/bin/python3 bench/privacy/make_dp_models.py OUT_DIR N [REFERENCE_EPOCHS]

Writes mlp_init.pt (Flatten, Linear 784-256, ReLU, Linear 256-10), cnn_init.pt (two Conv2d with
Tanh, as in Papernot et al.'s DP-SGD CNNs, no BatchNorm), members.npy (arange(N): the records
train-dp is given with --limit N) and recipe-mlp.yaml / recipe-cnn.yaml (how LiRA's reference
models are trained: without privacy, the attacker's best case).
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn


def main(out, n, epochs):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    cnn = nn.Sequential(nn.Conv2d(1, 16, 8, stride=2, padding=3), nn.Tanh(), nn.MaxPool2d(2, 1),
                        nn.Conv2d(16, 32, 4, stride=2), nn.Tanh(), nn.MaxPool2d(2, 1),
                        nn.Flatten(), nn.Linear(32 * 4 * 4, 32), nn.Tanh(), nn.Linear(32, 10))
    for name, model in (("mlp", mlp), ("cnn", cnn)):
        model.eval()
        torch.jit.script(model).save(os.path.join(out, f"{name}_init.pt"))
        with open(os.path.join(out, f"recipe-{name}.yaml"), "w") as f:
            f.write(f"architecture: {name}_init.pt\nepochs: {epochs}\nbatch: 128\noptimizer: sgd\nlearning_rate: 0.05\nseed: 1\n")
    np.save(os.path.join(out, "members.npy"), np.arange(n, dtype=np.int64))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 20)
