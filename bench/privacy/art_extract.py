#!/usr/bin/python3
"""IBM ART's model-extraction attacks on the Fashion-MNIST demo CNN: the peer for `aegis extract`.

    ART_PATH=/tmp/art /usr/bin/python3 bench/privacy/art_extract.py \
        --target examples/fashion-mnist/model.pt --surrogate examples/fashion-mnist/model_init.pt \
        --budgets 500,1000,5000 --epochs 10 --out /tmp/aegis-privacy-bench/art_extract.json
    # smoke run
    ART_PATH=/tmp/art /usr/bin/python3 bench/privacy/art_extract.py --budgets 200 --epochs 1 --out /tmp/x.json

The thief's pool is the Fashion-MNIST TRAIN split (natural data, pixels / 255); the target is only ever
asked for its output (ART keeps the argmax: use_probability=False). For every method and budget the
surrogate starts afresh from --surrogate (torch.jit.load each time: same architecture, seeded untrained
weights) and is trained by ART's PyTorchClassifier.fit with Adam (lr --lr) and batch --batch.
Methods:
  art-knockoff-random    KnockoffNets(sampling_strategy="random"): `budget` pool images drawn at random
                         without replacement, labelled by the target, then --epochs of training
  art-knockoff-adaptive  KnockoffNets(sampling_strategy="adaptive", reward="all"): a gradient bandit over
                         the pool's true classes picks each query; after every query the surrogate takes
                         one training step on it (batch of 1), then --epochs over all `budget` queries
  art-copycat            CopycatCNN: like knockoff-random (random draw, argmax labels, --epochs)
Per method and budget: fidelity (% agreement of argmax(surrogate) with argmax(target) on the first
--test-limit TEST images), surrogate_accuracy (% of their true labels), seconds (wall time of
extract(): target queries and training), queries (images the target was asked about, counted by a
wrapper) and target_calls (forward calls). numpy and torch are reseeded before every run.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

METHODS = ("knockoff-random", "knockoff-adaptive", "copycat")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default=os.path.join(common.ROOT, "examples/fashion-mnist/model.pt"))
    ap.add_argument("--surrogate", default=os.path.join(common.ROOT, "examples/fashion-mnist/model_init.pt"),
                    help="TorchScript the surrogate starts from (reloaded for every run)")
    ap.add_argument("--data", default=common.DEFAULT_DATA)
    ap.add_argument("--budgets", default="500,1000,5000", help="comma list of query budgets (nb_stolen)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list from " + ",".join(METHODS))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64, help="batch_size_fit and batch_size_query")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the surrogate")
    ap.add_argument("--test-limit", type=int, default=2000, help="first N test images for fidelity/accuracy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stock-adaptive", action="store_true",
                    help="run ART's adaptive KnockoffNets unpatched (keeps a whole class of the pool alive per "
                         "query: about 19 MB per query on Fashion-MNIST, so budget 5000 needs ~94 GB)")
    ap.add_argument("--out", default="-", help="results JSON (also printed on stdout)")
    args = ap.parse_args()

    art = common.use_art()
    import torch
    import torch.nn as nn
    from art.estimators.classification import PyTorchClassifier
    from art.attacks.extraction import CopycatCNN, KnockoffNets

    if not args.stock_adaptive:
        # KnockoffNets._sample_data returns x[y == action][i]: a view that keeps the whole per-class copy
        # (~6000 images, 18.8 MB) alive in the list of selected queries. Same draw, same values, but a copy.
        stock_sample = KnockoffNets._sample_data
        KnockoffNets._sample_data = staticmethod(lambda x, y, action: np.array(stock_sample(x, y, action)))

    threads = common.set_threads(args.threads)
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}")

    xtr, ytr = common.load_split(args.data, "train")
    xte, yte = common.load_split(args.data, "test")
    pool_x, pool_y = common.to_float(xtr), ytr
    test_x, test_y = common.to_float(xte[:args.test_limit]), yte[:args.test_limit]

    target = common.load_script(args.target)
    for p in target.parameters():
        p.requires_grad_(False)
    target_pred = common.predict_logits(target, test_x).argmax(1)
    target_acc = float((target_pred == test_y).mean())
    counter = common.make_counting(target)
    victim = PyTorchClassifier(model=counter, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                               clip_values=(0.0, 1.0), device_type="cpu")

    report = {
        "peer": f"ART {art.__version__}",
        "torch_version": torch.__version__,
        "threads": threads,
        "target": os.path.abspath(args.target),
        "surrogate_init": os.path.abspath(args.surrogate),
        "pool": {"split": "train", "records": int(len(pool_y))},
        "test_limit": int(len(test_y)),
        "target_accuracy": round(100 * target_acc, 3),
        "epochs": args.epochs, "batch": args.batch, "optimizer": "adam", "learning_rate": args.lr,
        "seed": args.seed,
        "adaptive_sample_copy_patch": not args.stock_adaptive,
        "definitions": {
            "fidelity": "% of the first test_limit TEST images where argmax(surrogate) == argmax(target)",
            "surrogate_accuracy": "% of the same images the surrogate classifies correctly",
            "seconds": "wall time of ART's extract(): target queries + surrogate training",
            "queries": "images the target was asked about during extract()",
        },
        "results": [],
    }
    common.log(f"art_extract: ART {art.__version__}, {threads} threads, target accuracy "
               f"{report['target_accuracy']:.2f}% on the first {len(test_y)} test images")

    for method in methods:
        for budget in budgets:
            np.random.seed(args.seed)
            torch.manual_seed(args.seed)
            surrogate = common.load_script(args.surrogate).train()
            optimizer = torch.optim.Adam(surrogate.parameters(), lr=args.lr)
            thief = PyTorchClassifier(model=surrogate, loss=nn.CrossEntropyLoss(), optimizer=optimizer,
                                      input_shape=(1, 28, 28), nb_classes=10, clip_values=(0.0, 1.0),
                                      device_type="cpu")
            if method == "copycat":
                attack = CopycatCNN(victim, batch_size_fit=args.batch, batch_size_query=args.batch,
                                    nb_epochs=args.epochs, nb_stolen=budget, use_probability=False)
                y_arg = None
                params = {}
            else:
                strategy = method.split("-", 1)[1]
                attack = KnockoffNets(victim, batch_size_fit=args.batch, batch_size_query=args.batch,
                                      nb_epochs=args.epochs, nb_stolen=budget, sampling_strategy=strategy,
                                      reward="all", verbose=False, use_probability=False)
                y_arg = pool_y if strategy == "adaptive" else None
                params = {"sampling_strategy": strategy, "reward": "all"}
            counter.reset()
            with common.Timer() as t:
                stolen = attack.extract(pool_x, y_arg, thieved_classifier=thief)
            pred = stolen.predict(test_x, batch_size=1000).argmax(1)
            row = {
                "method": f"art-{method}",
                "budget": budget,
                "params": params,
                "fidelity": round(100 * float((pred == target_pred).mean()), 3),
                "surrogate_accuracy": round(100 * float((pred == test_y).mean()), 3),
                "target_accuracy": report["target_accuracy"],
                "seconds": round(t.seconds, 3),
                "queries": int(counter.samples),
                "target_calls": int(counter.calls),
            }
            report["results"].append(row)
            common.log(f"  {row['method']:22s} budget {budget:6d}: fidelity {row['fidelity']:6.2f}%  surrogate "
                       f"accuracy {row['surrogate_accuracy']:6.2f}%  {t.seconds:8.2f} s  {row['queries']} queries "
                       f"({row['target_calls']} calls)")

    common.write_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
