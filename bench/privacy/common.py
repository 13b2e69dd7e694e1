"""Shared helpers for the bench/privacy scripts (imported by them; not a command).

- Fashion-MNIST IDX reading (the Debian `fashion-mnist` data package, gzip + numpy only),
- the IBM ART source path (ART_PATH, default /tmp/art; see bench/privacy/README.md),
- a module that counts the samples a wrapped model is asked about,
- a wrapper that makes a TorchScript nn.Sequential hookable by ART,
- the membership-inference metrics used on both sides of the comparison.
"""
import gzip
import json
import os
import struct
import sys
import time

import numpy as np

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def use_art():
    """Put the ART source tree first on sys.path and return the imported `art` package."""
    path = os.environ.get("ART_PATH", "/tmp/art")
    sys.path.insert(0, path)
    try:
        import art  # noqa: F401
    except ImportError as err:
        raise SystemExit(f"cannot import ART from {path} ({err}); see bench/privacy/README.md") from err
    return art


# --- data ----------------------------------------------------------------------------------------------

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """An IDX file (gzipped when the name ends in .gz) as a numpy array of its declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        blob = f.read()
    if len(blob) < 4 or blob[0] or blob[1] or blob[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file")
    ndim = blob[3]
    shape = struct.unpack(">%dI" % ndim, blob[4:4 + 4 * ndim])
    arr = np.frombuffer(blob, dtype=_IDX_TYPES[blob[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {int(np.prod(shape))} values, file holds {arr.size}")
    return arr.reshape(shape)


def load_split(data_dir, split):
    """(images uint8 (N,28,28), labels int64 (N,)) of the 'train' (60,000) or 'test' (10,000) split."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, not {split!r}")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    return images, labels.astype(np.int64)


def to_float(images):
    """uint8 (N,28,28) or (N,1,28,28) -> float32 (N,1,28,28) pixel / 255 in [0, 1]."""
    x = np.asarray(images, dtype=np.float32) / np.float32(255.0)
    return x.reshape(len(x), 1, 28, 28)


# --- models --------------------------------------------------------------------------------------------

def _torch():
    import torch
    return torch


def set_threads(n):
    """torch intra-op threads (2 on both sides of every comparison, like bench/compare_attacks.sh)."""
    torch = _torch()
    torch.set_num_threads(n)
    return torch.get_num_threads()


def load_script(path):
    torch = _torch()
    return torch.jit.load(path, map_location="cpu").eval()


def make_counting(net):
    """nn.Module forwarding to `net` and counting the samples it is asked about (`.samples`, `.calls`)."""
    torch = _torch()

    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.samples = 0
            self.calls = 0

        def reset(self):
            self.samples = 0
            self.calls = 0

        def forward(self, x):
            self.samples += int(x.shape[0])
            self.calls += 1
            return self.inner(x)

    return Counting(net)


def hookable_sequential(script_module):
    """An eager nn.Sequential whose children are thin Python wrappers around the children of a TorchScript
    nn.Sequential (same names "0", "1", ..., same parameters, shared, not copied).

    ART's PyTorchClassifier only walks the layers of a model that `isinstance(nn.Sequential)`, which a
    torch.jit.load()ed module is not, and get_activations() puts a forward hook on the chosen layer, which
    torch refuses on any ScriptModule ("register_forward_hook is not supported on ScriptModules"). The
    wrappers are plain nn.Modules, so the hooks go on them."""
    torch = _torch()

    class Eager(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    names = [n for n, _ in script_module.named_children()]
    if names != [str(i) for i in range(len(names))]:
        raise ValueError(f"not a TorchScript nn.Sequential (children {names})")
    seq = torch.nn.Sequential(*[Eager(c) for _, c in script_module.named_children()])
    return seq.eval()


def predict_logits(net, x, batch=1000):
    """Logits of float32 (N,1,28,28) x, in batches, no autograd."""
    torch = _torch()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(net(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


def accuracy(net, x, y, batch=1000):
    return float((predict_logits(net, x, batch).argmax(1) == y).mean()) if len(y) else float("nan")


# --- metrics -------------------------------------------------------------------------------------------

FPR_TARGETS = (0.01, 0.001)


def finite_scores(scores):
    """NaN -> below every finite score, +-inf -> just beyond the finite range; returns (scores, n_fixed)."""
    s = np.asarray(scores, dtype=np.float64).copy()
    bad = ~np.isfinite(s)
    if bad.any():
        fin = s[~bad]
        lo, hi = (fin.min(), fin.max()) if fin.size else (0.0, 0.0)
        span = max(hi - lo, 1.0)
        s[np.isposinf(s)] = hi + span
        s[np.isneginf(s)] = lo - span
        s[np.isnan(s)] = lo - 2 * span
    return s, int(bad.sum())


def mia_metrics(scores, is_member):
    """ROC metrics of a membership score (higher = more likely a member) on labelled records.

    auc: ROC AUC. tpr_at_1pct_fpr / tpr_at_0.1pct_fpr: the LiRA convention, the largest TPR over all
    thresholds whose FPR <= the target (sklearn roc_curve, drop_intermediate=False).
    balanced_accuracy: the best (TPR + TNR) / 2 over all thresholds (= (1 + max membership advantage) / 2),
    threshold-free, so it compares scores on any scale."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.asarray(is_member).astype(np.int64)
    s, n_fixed = finite_scores(scores)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    out = {
        "n_members": int(y.sum()),
        "n_nonmembers": int((1 - y).sum()),
        "auc": round(float(roc_auc_score(y, s)), 6),
    }
    for target in FPR_TARGETS:
        key = "tpr_at_%gpct_fpr" % (100 * target)
        out[key] = round(float(tpr[fpr <= target + 1e-12].max()), 6)
    out["balanced_accuracy"] = round(float(((tpr + 1.0 - fpr) / 2.0).max()), 6)
    if n_fixed:
        out["non_finite_scores"] = n_fixed
    return out


MIA_DEFINITIONS = {
    "auc": "ROC AUC of the membership score over the evaluation half (members vs non-members)",
    "tpr_at_1pct_fpr": "largest TPR among thresholds with FPR <= 1% (LiRA convention, sklearn roc_curve)",
    "tpr_at_0.1pct_fpr": "largest TPR among thresholds with FPR <= 0.1%",
    "balanced_accuracy": "best (TPR + TNR) / 2 over all thresholds (threshold-free, same on both sides)",
    "balanced_accuracy_own_threshold": "ART only: (TPR + TNR) / 2 of the attack's own decision "
                                       "(np.round of its membership probability, what infer() without probabilities returns)",
    "seconds": "wall time of fit() + infer() (ART), target queries included",
}


def write_json(obj, path):
    text = json.dumps(obj, indent=2)
    if path and path != "-":
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        with open(path, "w") as f:
            f.write(text + "\n")
    print(text)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        return False
