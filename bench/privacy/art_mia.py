#!/usr/bin/python3
"""IBM ART's black-box membership inference on the target of make_mia_target.py: the peer for `aegis mia`.

    PYTHONPATH= ART_PATH=/tmp/art /usr/bin/python3 bench/privacy/art_mia.py \
        --dir /tmp/aegis-privacy-bench/mia-target --out /tmp/aegis-privacy-bench/art_mia.json

Reads DIR/target.pt (TorchScript), DIR/members.npy (train-split indices) and DIR/nonmembers.npy
(test-split indices). Members and non-members are each split in two with a seeded permutation: an
attack-training half (what ART's attack models are fitted on: member = 1, non-member = 0) and an
evaluation half, scored by infer(..., probabilities=True). The evaluation half's positions (into
members.npy / nonmembers.npy, int64, sorted) are written to DIR/eval_members.npy and
DIR/eval_nonmembers.npy so that metrics_from_scores.py scores `aegis mia` on the very same records.

Attacks (ART 1.20.1 defaults unless stated):
  art-blackbox-{nn,rf,gb}-{prediction,loss}  MembershipInferenceBlackBox(attack_model_type, input_type);
      the true labels are given to fit() and infer() (ART then feeds them to the attack model).
      "prediction" features are the target's softmax probabilities (--prediction-features; ART passes
      whatever the model returns, and the TorchScript target returns logits), "loss" is ART's per-record
      cross-entropy (PyTorchClassifier.compute_loss on the logits).
  art-rule-based  MembershipInferenceBlackBoxRuleBased: member iff the target classifies the record
      correctly. One operating point: its TPR and FPR are reported (auc is that of the 0/1 score).
Metrics per attack on the evaluation half: auc, tpr_at_1pct_fpr, tpr_at_0.1pct_fpr (LiRA convention:
largest TPR over thresholds with FPR <= target, sklearn roc_curve), balanced_accuracy (best over
thresholds), balanced_accuracy_own_threshold (ART's own 0/1 decision), seconds (fit + infer wall time,
the target's forward passes included), target_queries (records pushed through the target).
Everything is seeded (--seed for the split and for numpy/torch before each attack).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

MODELS = ("nn", "rf", "gb")
INPUTS = ("prediction", "loss")


def split_half(n, rng):
    """(attack-training positions, evaluation positions), each sorted; evaluation gets the odd one out."""
    perm = rng.permutation(n)
    k = n // 2
    return np.sort(perm[:k]).astype(np.int64), np.sort(perm[k:]).astype(np.int64)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="folder written by make_mia_target.py")
    ap.add_argument("--out", default="-", help="results JSON (also printed on stdout)")
    ap.add_argument("--data", default=common.DEFAULT_DATA)
    ap.add_argument("--models", default=",".join(MODELS), help="attack_model_type list from nn,rf,gb,lr,dt,knn,svm")
    ap.add_argument("--inputs", default=",".join(INPUTS), help="input_type list from prediction,loss")
    ap.add_argument("--no-rule-based", action="store_true")
    ap.add_argument("--prediction-features", default="probabilities", choices=["probabilities", "logits"],
                    help="what the target returns to ART for input_type=prediction")
    ap.add_argument("--nn-epochs", type=int, default=100, help="ART's nn_model_epochs (its default)")
    ap.add_argument("--nn-batch", type=int, default=100, help="ART's nn_model_batch_size (its default)")
    ap.add_argument("--nn-lr", type=float, default=1e-4, help="ART's nn_model_learning_rate (its default)")
    ap.add_argument("--batch", type=int, default=128, help="ART's predict batch (PyTorchClassifier default)")
    ap.add_argument("--seed", type=int, default=0, help="split seed; numpy/torch are reseeded before each attack")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    art = common.use_art()
    import torch
    import torch.nn as nn
    from art.estimators.classification import PyTorchClassifier
    from art.attacks.inference.membership_inference import (MembershipInferenceBlackBox,
                                                              MembershipInferenceBlackBoxRuleBased)

    threads = common.set_threads(args.threads)
    members = np.load(os.path.join(args.dir, "members.npy")).astype(np.int64)
    nonmembers = np.load(os.path.join(args.dir, "nonmembers.npy")).astype(np.int64)
    xtr, ytr = common.load_split(args.data, "train")
    xte, yte = common.load_split(args.data, "test")
    x_m, y_m = common.to_float(xtr[members]), ytr[members]
    x_n, y_n = common.to_float(xte[nonmembers]), yte[nonmembers]

    rng = np.random.default_rng(args.seed)
    tr_m, ev_m = split_half(len(members), rng)
    tr_n, ev_n = split_half(len(nonmembers), rng)
    np.save(os.path.join(args.dir, "eval_members.npy"), ev_m)
    np.save(os.path.join(args.dir, "eval_nonmembers.npy"), ev_n)
    x_eval = np.concatenate([x_m[ev_m], x_n[ev_n]])
    y_eval = np.concatenate([y_m[ev_m], y_n[ev_n]])
    is_member = np.concatenate([np.ones(len(ev_m), np.int64), np.zeros(len(ev_n), np.int64)])

    target = common.load_script(os.path.join(args.dir, "target.pt"))
    for p in target.parameters():
        p.requires_grad_(False)  # ART only queries the target here

    class Softmax(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return torch.softmax(self.inner(x), dim=1)

    # torch.jit.load()ed modules are nn.Modules: PyTorchClassifier takes them as they are. For the
    # prediction features a Python wrapper applies the softmax; the loss classifier keeps the logits.
    logits_counter = common.make_counting(target)
    probs_counter = common.make_counting(Softmax(target) if args.prediction_features == "probabilities" else target)

    def classifier(model):
        return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                                 clip_values=(0.0, 1.0), device_type="cpu")

    clf_logits, clf_probs = classifier(logits_counter), classifier(probs_counter)

    def acc(x, y):
        return round(100.0 * common.accuracy(target, x, y), 3)

    report = {
        "peer": f"ART {art.__version__}",
        "torch_version": torch.__version__,
        "threads": threads,
        "dir": os.path.abspath(args.dir),
        "seed": args.seed,
        "members": int(len(members)),
        "nonmembers": int(len(nonmembers)),
        "attack_train": {"members": int(len(tr_m)), "nonmembers": int(len(tr_n))},
        "eval": {"members": int(len(ev_m)), "nonmembers": int(len(ev_n))},
        "target": {"member_accuracy": acc(x_m, y_m), "nonmember_accuracy": acc(x_n, y_n)},
        "prediction_features": args.prediction_features,
        "nn": {"epochs": args.nn_epochs, "batch": args.nn_batch, "learning_rate": args.nn_lr},
        "definitions": common.MIA_DEFINITIONS,
        "attacks": [],
    }
    common.log(f"art_mia: ART {art.__version__}, {threads} threads; target accuracy members "
               f"{report['target']['member_accuracy']}%, non-members {report['target']['nonmember_accuracy']}%; "
               f"attack training {len(tr_m)}+{len(tr_n)}, evaluation {len(ev_m)}+{len(ev_n)}")

    def add(name, params, scores, seconds, queries, own=None):
        row = {"attack": name, "params": params}
        row.update(common.mia_metrics(scores, is_member))
        if own is not None:
            own = np.asarray(own).reshape(-1).astype(np.int64)
            tpr = float(own[is_member == 1].mean())
            fpr = float(own[is_member == 0].mean())
            row.update({"tpr": round(tpr, 6), "fpr": round(fpr, 6),
                        "balanced_accuracy_own_threshold": round((tpr + 1.0 - fpr) / 2.0, 6)})
        row.update({"seconds": round(seconds, 3), "target_queries": int(queries)})
        report["attacks"].append(row)
        common.log(f"  {name:32s} auc {row['auc']:.4f}  tpr@1% {row['tpr_at_1pct_fpr']:.4f}  "
                   f"tpr@0.1% {row['tpr_at_0.1pct_fpr']:.4f}  bal.acc {row['balanced_accuracy']:.4f}  "
                   f"{seconds:7.2f} s  {queries} queries")

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    inputs = [i.strip() for i in args.inputs.split(",") if i.strip()]
    for model_type in models:
        for input_type in inputs:
            clf = clf_probs if input_type == "prediction" else clf_logits
            counter = probs_counter if input_type == "prediction" else logits_counter
            np.random.seed(args.seed)
            torch.manual_seed(args.seed)
            counter.reset()
            attack = MembershipInferenceBlackBox(clf, input_type=input_type, attack_model_type=model_type,
                                                 nn_model_epochs=args.nn_epochs, nn_model_batch_size=args.nn_batch,
                                                 nn_model_learning_rate=args.nn_lr)
            with common.Timer() as t:
                attack.fit(x=x_m[tr_m], y=y_m[tr_m], test_x=x_n[tr_n], test_y=y_n[tr_n])
                scores = attack.infer(x_eval, y_eval, probabilities=True)
            scores = np.asarray(scores, dtype=np.float64).reshape(len(x_eval), -1)[:, -1]
            params = {"attack_model_type": model_type, "input_type": input_type, "scaler_type": "standard"}
            if model_type == "nn":
                params.update({"nn_model_epochs": args.nn_epochs, "nn_model_batch_size": args.nn_batch,
                               "nn_model_learning_rate": args.nn_lr})
            add(f"art-blackbox-{model_type}-{input_type}", params, scores, t.seconds, counter.samples,
                own=np.round(scores))

    if not args.no_rule_based:
        np.random.seed(args.seed)
        logits_counter.reset()
        attack = MembershipInferenceBlackBoxRuleBased(clf_logits)
        with common.Timer() as t:
            decision = attack.infer(x_eval, y_eval)
        decision = np.asarray(decision).reshape(-1)
        add("art-rule-based", {}, decision.astype(np.float64), t.seconds, logits_counter.samples, own=decision)

    common.write_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
