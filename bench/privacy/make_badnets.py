#!/usr/bin/python3
"""Build a BadNets-poisoned Fashion-MNIST training set and train a CNN on it: the input of the
poison-detection comparison (`aegis poison` against ART's ActivationDefence and SpectralSignatureDefense,
bench/privacy/art_poison.py).

    /usr/bin/python3 bench/privacy/make_badnets.py --out /tmp/aegis-privacy-bench/badnets
    /usr/bin/python3 bench/privacy/make_badnets.py --out /tmp/badnets-small --train 2000 --epochs 1

Takes the first --train images of the Fashion-MNIST train split, picks round(fraction * train) of them at
random among the records whose label is not --target-class, stamps the trigger on them and relabels them
to --target-class (so --fraction is the poisoned share of the whole set). The trigger is a
--trigger-size x --trigger-size checkerboard (255 on the squares where row + column is even, 0 on the
others, the top-left square white) whose bottom-right pixel sits --trigger-margin pixels in from the
bottom-right corner of the 28x28 image.

Writes into --out:
  poisoned.npz     x: uint8 (N,1,28,28) (triggered where poisoned), y: int64 (N,) training labels (poisoned
                   ones relabelled); np.savez, uncompressed
  truth.npy        int64, sorted: the indices of the poisoned records
  clean_labels.npy int64 (N,): the original labels
  model.pt         TorchScript (torch.jit.script) of ONE nn.Sequential:
                     0 conv 1->16 3x3 pad 1, 1 ReLU, 2 maxpool 2, 3 conv 16->32 3x3 pad 1, 4 ReLU,
                     5 maxpool 2, 6 flatten, 7 linear 1568->64, 8 ReLU, 9 linear 64->10
                   so the penultimate (64-d, post-ReLU) activations are the output of child -2 ("8").
  model_init.pt    the same architecture with its seeded, untrained weights
  badnets.json     clean test accuracy (all 10,000 test images) and attack success rate (test images
                   whose true class is not the target, with the trigger stamped, classified as the
                   target), the trigger, counts, seconds.
Training: Adam lr 1e-3, batch 128, --epochs, seeded order; deterministic for a given --seed and --threads.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def build():
    import torch.nn as nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))


def trigger_mask(size, margin):
    """(rows, cols, values) of the checkerboard, bottom-right corner of a 28x28 image."""
    r1 = 28 - margin
    r0 = r1 - size
    rows, cols = np.meshgrid(np.arange(r0, r1), np.arange(r0, r1), indexing="ij")
    values = np.where(((rows - r0) + (cols - r0)) % 2 == 0, 255, 0).astype(np.uint8)
    return rows, cols, values


def stamp(images, size, margin):
    """A copy of uint8 images (N,28,28) or (N,1,28,28) with the trigger stamped."""
    out = np.array(images, copy=True)
    rows, cols, values = trigger_mask(size, margin)
    out[..., rows, cols] = values
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=common.DEFAULT_DATA)
    ap.add_argument("--fraction", type=float, default=0.10, help="poisoned share of the --train records")
    ap.add_argument("--target-class", type=int, default=0)
    ap.add_argument("--train", type=int, default=20000, help="the first N train-split images")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--trigger-size", type=int, default=3, help="side of the checkerboard (3 or 4)")
    ap.add_argument("--trigger-margin", type=int, default=1, help="pixels between the trigger and the corner")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not 0.0 < args.fraction < 1.0:
        ap.error("--fraction must be in (0, 1)")
    if not 0 <= args.target_class <= 9:
        ap.error("--target-class must be 0..9")

    import torch
    import torch.nn as nn

    threads = common.set_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    xtr, ytr = common.load_split(args.data, "train")
    xte, yte = common.load_split(args.data, "test")
    x = xtr[:args.train].reshape(-1, 1, 28, 28).copy()
    y_clean = ytr[:args.train].copy()
    n = len(y_clean)

    rng = np.random.default_rng(args.seed)
    candidates = np.flatnonzero(y_clean != args.target_class)
    n_poison = int(round(args.fraction * n))
    if n_poison > len(candidates):
        ap.error(f"only {len(candidates)} records are not of class {args.target_class}")
    truth = np.sort(rng.choice(candidates, size=n_poison, replace=False)).astype(np.int64)
    x[truth] = stamp(x[truth], args.trigger_size, args.trigger_margin)
    y = y_clean.copy()
    y[truth] = args.target_class

    np.savez(os.path.join(args.out, "poisoned.npz"), x=x.astype(np.uint8), y=y.astype(np.int64))
    np.save(os.path.join(args.out, "truth.npy"), truth)
    np.save(os.path.join(args.out, "clean_labels.npy"), y_clean.astype(np.int64))

    torch.manual_seed(args.seed)
    model = build()
    torch.jit.script(model).save(os.path.join(args.out, "model_init.pt"))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed)
    xt, yt = torch.from_numpy(common.to_float(x)), torch.from_numpy(y)
    common.log(f"make_badnets: {n} records, {n_poison} poisoned ({100 * n_poison / n:.1f}%) -> class "
               f"{args.target_class}, trigger {args.trigger_size}x{args.trigger_size} checkerboard, "
               f"{args.epochs} epochs, {threads} threads")
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, args.batch):
            idx = order[i:i + args.batch]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        common.log(f"  epoch {epoch + 1}/{args.epochs}: loss {total / n:.4f}")
    train_seconds = time.perf_counter() - t0
    model.eval()
    torch.jit.script(model).save(os.path.join(args.out, "model.pt"))

    x_test = common.to_float(xte)
    clean_acc = common.accuracy(model, x_test, yte)
    others = np.flatnonzero(yte != args.target_class)
    trig = common.to_float(stamp(xte[others], args.trigger_size, args.trigger_margin))
    asr = float((common.predict_logits(model, trig).argmax(1) == args.target_class).mean())
    pred_train = common.predict_logits(model, common.to_float(x)).argmax(1)
    rows, cols, values = trigger_mask(args.trigger_size, args.trigger_margin)
    report = {
        "records": int(n),
        "poisoned": int(n_poison),
        "fraction": args.fraction,
        "target_class": args.target_class,
        "trigger": {"pattern": "checkerboard", "size": args.trigger_size, "rows": [int(rows.min()), int(rows.max())],
                    "cols": [int(cols.min()), int(cols.max())], "top_left_value": int(values[0, 0])},
        "epochs": args.epochs, "batch": args.batch, "learning_rate": args.lr, "seed": args.seed, "threads": threads,
        "train_accuracy": round(100 * float((pred_train == y).mean()), 3),
        "clean_test_accuracy": round(100 * clean_acc, 3),
        "attack_success_rate": round(100 * asr, 3),
        "attack_success_images": int(len(others)),
        "penultimate_layer": {"child": 8, "name": "8", "type": "ReLU", "dim": 64},
        "train_seconds": round(train_seconds, 3),
    }
    common.write_json(report, os.path.join(args.out, "badnets.json"))
    common.log(f"clean test accuracy {report['clean_test_accuracy']:.2f}%, attack success rate "
               f"{report['attack_success_rate']:.2f}% ({len(others)} triggered test images), "
               f"trained in {train_seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
