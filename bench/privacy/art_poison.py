#!/usr/bin/python3
"""IBM ART's poison detectors on the BadNets set of make_badnets.py: the peer for `aegis poison`.

    ART_PATH=/tmp/art /usr/bin/python3 bench/privacy/art_poison.py \
        --dir /tmp/aegis-privacy-bench/badnets --out /tmp/aegis-privacy-bench/art_poison.json

Reads DIR/model.pt (TorchScript nn.Sequential), DIR/poisoned.npz (x uint8 (N,1,28,28), y int64; pixels / 255
for the model), DIR/truth.npy (indices of the poisoned records) and the fraction from DIR/badnets.json.
Detectors (each given the poisoned training set and its training labels):
  art-activation-defence   ActivationDefence.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA",
                           cluster_analysis="smaller"): per training label, 2-means on the PCA-10 of the
                           activations, the smaller cluster is flagged
  art-spectral-signature   SpectralSignatureDefense(expected_pp_poison=fraction, eps_multiplier=1.5,
                           batch_size=128).detect_poison(): per training label, flags the records whose
                           score (|projection on the top right-singular vector of the centred activations|)
                           is at or above the 1 - 1.5 x fraction quantile
Layer: both ART detectors take the activations of classifier.layer_names[-1]. For a PyTorch nn.Sequential
ART lists every child, so that is the logits layer (child "9", 10-d), not the penultimate one. To look at
the same 64-d penultimate layer as `aegis poison` (child -2, the ReLU "8"), the classifier here reports
layer_names without the last child (--layer penultimate, the default); --layer logits,penultimate runs both.
A torch.jit.load()ed module is not an nn.Sequential to ART (it would see a single layer) and refuses
forward hooks, so the scripted children are wrapped in plain nn.Modules (common.hookable_sequential).
Per detector: flagged, precision, recall, f1 (against truth.npy), seconds (wall time of the
detector's construction and detect_poison(), activations included), the layer and its width.
numpy and torch are reseeded before each detector (sklearn's KMeans draws from numpy's global RNG).
Besides ART's rows, `reference` holds one row that is not ART: the spectral signature as Tran et al.
publish it (the projection of the centred activations; ART projects the uncentred ones) with ART's
per-class cutoff, on the same activations (--no-reference skips it).
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def prf(flagged_mask, truth_mask):
    tp = int((flagged_mask & truth_mask).sum())
    n_flag, n_true = int(flagged_mask.sum()), int(truth_mask.sum())
    precision = tp / n_flag if n_flag else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"flagged": n_flag, "true_positives": tp, "precision": round(precision, 6), "recall": round(recall, 6),
            "f1": round(f1, 6)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="folder written by make_badnets.py")
    ap.add_argument("--out", default="-", help="results JSON (also printed on stdout)")
    ap.add_argument("--fraction", type=float, default=None,
                    help="expected_pp_poison for the spectral signature (default: badnets.json's fraction)")
    ap.add_argument("--eps-multiplier", type=float, default=1.5)
    ap.add_argument("--nb-clusters", type=int, default=2)
    ap.add_argument("--nb-dims", type=int, default=10)
    ap.add_argument("--reduce", default="PCA", choices=["PCA", "FastICA"])
    ap.add_argument("--cluster-analysis", default="smaller")
    ap.add_argument("--layer", default="penultimate", help="comma list of penultimate,logits")
    ap.add_argument("--methods", default="activation,spectral", help="comma list of activation,spectral")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the non-ART centred spectral-signature reference row (JSON key `reference`)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # sklearn 1.2 KMeans n_init notice, once per class

    art = common.use_art()
    import torch
    import torch.nn as nn
    from art.estimators.classification import PyTorchClassifier
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    threads = common.set_threads(args.threads)
    fraction = args.fraction
    meta_path = os.path.join(args.dir, "badnets.json")
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    if fraction is None:
        if "fraction" not in meta:
            ap.error("no --fraction and no badnets.json")
        fraction = float(meta["fraction"])

    data = np.load(os.path.join(args.dir, "poisoned.npz"))
    x = common.to_float(data["x"])
    y = data["y"].astype(np.int64)
    truth = np.load(os.path.join(args.dir, "truth.npy")).astype(np.int64)
    truth_mask = np.zeros(len(y), dtype=bool)
    truth_mask[truth] = True

    script = common.load_script(os.path.join(args.dir, "model.pt"))
    for p in script.parameters():
        p.requires_grad_(False)
    seq = common.hookable_sequential(script)

    class LayerNames(PyTorchClassifier):
        """PyTorchClassifier whose layer_names can drop trailing layers (ART's detectors take the last one)."""

        def __init__(self, *a, drop_last=0, **kw):
            super().__init__(*a, **kw)
            self._drop_last = drop_last

        @property
        def layer_names(self):
            names = list(self._layer_names)
            return names[:len(names) - self._drop_last] if self._drop_last else names

    report = {
        "peer": f"ART {art.__version__}",
        "torch_version": torch.__version__,
        "threads": threads,
        "dir": os.path.abspath(args.dir),
        "records": int(len(y)),
        "poisoned": int(len(truth)),
        "fraction": fraction,
        "model": {k: meta[k] for k in ("clean_test_accuracy", "attack_success_rate") if k in meta},
        "detectors": [],
        "reference": [],
    }
    common.log(f"art_poison: ART {art.__version__}, {threads} threads, {len(y)} records, {len(truth)} poisoned")

    layers = [v.strip() for v in args.layer.split(",") if v.strip()]
    methods = [v.strip() for v in args.methods.split(",") if v.strip()]
    for layer in layers:
        if layer not in ("penultimate", "logits"):
            ap.error(f"unknown --layer {layer}")
        clf = LayerNames(model=seq, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                         clip_values=(0.0, 1.0), device_type="cpu", drop_last=1 if layer == "penultimate" else 0)
        used = clf.layer_names[-1]
        probe = clf.get_activations(x[:4], layer=len(clf.layer_names) - 1, batch_size=4)
        width = int(np.prod(probe.shape[1:]))
        with torch.no_grad():  # the same activations straight from the TorchScript children
            direct = torch.from_numpy(x[:4])
            for name, child in script.named_children():
                direct = child(direct)
                if name == used:
                    break
        if not np.allclose(probe.reshape(4, -1), direct.numpy().reshape(4, -1), atol=1e-6):
            sys.exit(f"ART's activations of layer {used} differ from the model's own")
        module = type(dict(seq.named_children())[used].inner).__name__
        kind = str(getattr(dict(seq.named_children())[used].inner, "original_name", module))
        for method in methods:
            np.random.seed(args.seed)
            torch.manual_seed(args.seed)
            suffix = "" if layer == "penultimate" else "-logits"
            if method == "activation":
                params = {"nb_clusters": args.nb_clusters, "nb_dims": args.nb_dims, "reduce": args.reduce,
                          "cluster_analysis": args.cluster_analysis, "clustering_method": "KMeans"}
                with common.Timer() as t:
                    defence = ActivationDefence(clf, x, y)
                    _, is_clean = defence.detect_poison(**params)
                name = "art-activation-defence" + suffix
            elif method == "spectral":
                params = {"expected_pp_poison": fraction, "eps_multiplier": args.eps_multiplier,
                          "batch_size": args.batch}
                with common.Timer() as t:
                    defence = SpectralSignatureDefense(clf, x, y, **params)
                    _, is_clean = defence.detect_poison()
                name = "art-spectral-signature" + suffix
            else:
                ap.error(f"unknown method {method}")
            flagged = np.asarray(is_clean, dtype=np.int64) == 0
            row = {"method": name, "params": params, "layer": {"name": used, "type": kind, "dim": width}}
            row.update(prf(flagged, truth_mask))
            row["seconds"] = round(t.seconds, 3)
            report["detectors"].append(row)
            common.log(f"  {name:32s} layer {used} ({kind}, {width}-d): flagged {row['flagged']:6d}  "
                       f"precision {row['precision']:.4f}  recall {row['recall']:.4f}  f1 {row['f1']:.4f}  "
                       f"{t.seconds:.2f} s")

        if not args.no_reference and "spectral" in methods:
            # Not ART: Tran et al.'s Algorithm 1 as published (scores = |projection of the CENTRED activations on
            # the top right-singular vector|), with ART's per-class cutoff, on the same activations. It shows how
            # much of ART's result comes from projecting the uncentred activations.
            with common.Timer() as t:
                acts = clf.get_activations(x, layer=len(clf.layer_names) - 1, batch_size=args.batch)
                acts = acts.reshape(len(acts), -1)
                flagged = np.zeros(len(y), dtype=bool)
                for c in range(10):
                    idx = np.flatnonzero(y == c)
                    if len(idx) == 0:
                        continue
                    centred = acts[idx] - acts[idx].mean(axis=0)
                    top = np.linalg.svd(centred, full_matrices=False)[2][0]
                    score = np.abs(centred @ top)
                    cutoff = np.quantile(score, max(1 - args.eps_multiplier * fraction, 0.0))
                    flagged[idx] = score >= cutoff
            row = {"method": "reference-spectral-centred" + ("" if layer == "penultimate" else "-logits"),
                   "params": {"expected_pp_poison": fraction, "eps_multiplier": args.eps_multiplier},
                   "layer": {"name": used, "type": kind, "dim": width}, "not_art": True}
            row.update(prf(flagged, truth_mask))
            row["seconds"] = round(t.seconds, 3)
            report["reference"].append(row)
            common.log(f"  {row['method']:32s} layer {used} ({kind}, {width}-d): flagged {row['flagged']:6d}  "
                       f"precision {row['precision']:.4f}  recall {row['recall']:.4f}  f1 {row['f1']:.4f}  "
                       f"{t.seconds:.2f} s  (not ART: centred spectral signature)")

    common.write_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
