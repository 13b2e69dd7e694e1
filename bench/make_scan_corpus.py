#!/usr/bin/python3
"""Build a realistic corpus for timing `aegis scan` against peer scanners.

    /usr/bin/python3 bench/make_scan_corpus.py OUTDIR [--big-gb 2] [--scale 1] [--dense-mb 107]

OUTDIR/benign     the benign test fixtures plus many model files made with the real libraries
                  (torch state dicts shaped like ResNet/VGG/BERT/MLP, checkpoints with optimizer
                  state, TorchScript, legacy format, NumPy, safetensors, sklearn/joblib, wrappers)
OUTDIR/malicious  the malicious test fixtures and their manifest.json (tests/fixtures/make_fixtures.py)
OUTDIR/malformed  damaged files that a scanner must report
OUTDIR/big        multi-GB files sharing the --big-gb budget: a torch state dict (half), a raw
                  protocol-5 pickle of one ndarray (a quarter, payload-heavy), a protocol-4 one,
                  and an opcode-dense pickle of many small tuples (at most --dense-mb)
Random weights are seeded; the corpus is regenerated from scratch on every run.
"""

import argparse
import importlib.util
import os
import pickle
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import joblib
from sklearn.cluster import KMeans
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES_SCRIPT = os.path.join(HERE, "..", "tests", "fixtures", "make_fixtures.py")


def load_fixture_module():
    spec = importlib.util.spec_from_file_location("aegis_make_fixtures", FIXTURES_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Progress:
    def __init__(self):
        self.start = time.time()
        self.count = 0
        self.bytes = 0

    def done(self, path):
        size = os.path.getsize(path)
        self.count += 1
        self.bytes += size
        print(f"[{time.time() - self.start:7.1f}s] {self.count:4d} {size / 1e6:10.1f} MB  {path}", flush=True)


# ---------------------------------------------------------------------------------------------
# State dicts with the names and shapes of well-known architectures, filled with seeded noise.
def width(c, wm):
    return max(8, int(round(c * wm)))


def conv_bn(sd, prefix, cin, cout, k):
    sd[f"{prefix}.weight"] = (cout, cin, k, k)
    return bn(sd, prefix.replace("conv", "bn"), cout)


def bn(sd, prefix, c):
    for n in ("weight", "bias", "running_mean", "running_var"):
        sd[f"{prefix}.{n}"] = (c,)
    sd[f"{prefix}.num_batches_tracked"] = ()


def resnet_shapes(blocks, bottleneck, num_classes=1000, wm=1.0):
    sd = {}
    cin = width(64, wm)
    conv_bn(sd, "conv1", 3, cin, 7)
    for stage, (n, w) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        width_ = width(w, wm)
        cout = width_ * (4 if bottleneck else 1)
        for b in range(n):
            p = f"layer{stage}.{b}"
            if bottleneck:
                conv_bn(sd, f"{p}.conv1", cin, width_, 1)
                conv_bn(sd, f"{p}.conv2", width_, width_, 3)
                conv_bn(sd, f"{p}.conv3", width_, cout, 1)
            else:
                conv_bn(sd, f"{p}.conv1", cin, width_, 3)
                conv_bn(sd, f"{p}.conv2", width_, width_, 3)
            if b == 0 and (cin != cout or stage > 1):
                sd[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                bn(sd, f"{p}.downsample.1", cout)
            cin = cout
    sd["fc.weight"] = (num_classes, cin)
    sd["fc.bias"] = (num_classes,)
    return sd


def vgg_shapes(cfg=(64, 64, 128, 128, 256, 256, 256, 512, 512, 512), fc=512, num_classes=100, wm=1.0):
    sd, cin, fc = {}, 3, width(fc, wm)
    for i, c in enumerate(cfg):
        c = width(c, wm)
        sd[f"features.{i}.weight"] = (c, cin, 3, 3)
        sd[f"features.{i}.bias"] = (c,)
        cin = c
    sd["classifier.0.weight"], sd["classifier.0.bias"] = (fc, cin * 7 * 7), (fc,)
    sd["classifier.3.weight"], sd["classifier.3.bias"] = (fc, fc), (fc,)
    sd["classifier.6.weight"], sd["classifier.6.bias"] = (num_classes, fc), (num_classes,)
    return sd


def bert_shapes(layers, hidden, vocab=30522, positions=512, wm=1.0):
    hidden, vocab = width(hidden, wm), width(vocab, wm)
    sd = {"embeddings.word_embeddings.weight": (vocab, hidden),
          "embeddings.position_embeddings.weight": (positions, hidden),
          "embeddings.token_type_embeddings.weight": (2, hidden),
          "embeddings.LayerNorm.weight": (hidden,), "embeddings.LayerNorm.bias": (hidden,)}
    for i in range(layers):
        p = f"encoder.layer.{i}"
        for m in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            sd[f"{p}.{m}.weight"], sd[f"{p}.{m}.bias"] = (hidden, hidden), (hidden,)
        sd[f"{p}.intermediate.dense.weight"], sd[f"{p}.intermediate.dense.bias"] = (4 * hidden, hidden), (4 * hidden,)
        sd[f"{p}.output.dense.weight"], sd[f"{p}.output.dense.bias"] = (hidden, 4 * hidden), (hidden,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            sd[f"{p}.{ln}.weight"], sd[f"{p}.{ln}.bias"] = (hidden,), (hidden,)
    sd["pooler.dense.weight"], sd["pooler.dense.bias"] = (hidden, hidden), (hidden,)
    return sd


def mlp_shapes(sizes, wm=1.0):
    sizes = [sizes[0]] + [width(n, wm) for n in sizes[1:-1]] + [sizes[-1]]
    sd = {}
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        sd[f"layers.{2 * i}.weight"], sd[f"layers.{2 * i}.bias"] = (b, a), (b,)
    return sd


def materialize(shapes, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(100, dtype=torch.int64)
        else:
            sd[name] = (torch.randn(shape, generator=g) * 0.02).to(dtype)
    return sd


def scaled(n, scale, low=1):
    return max(low, int(round(n * scale)))


class Corpus:
    def __init__(self, out, scale, big_gb, dense_mb):
        self.out = os.path.abspath(out)
        self.scale, self.big_gb, self.dense_mb = scale, big_gb, dense_mb
        self.progress = Progress()
        self.fx = load_fixture_module()

    def path(self, *parts):
        p = os.path.join(self.out, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def save_torch(self, obj, *parts, legacy=False):
        p = self.path(*parts)
        if legacy:
            torch.save(obj, p, _use_new_zipfile_serialization=False)
        else:
            torch.save(obj, p)
        self.progress.done(p)
        return p

    def emit(self, data, *parts):
        p = self.path(*parts)
        with open(p, "wb") as f:
            f.write(data)
        self.progress.done(p)
        return p

    # -- benign ------------------------------------------------------------------------------
    def torch_models(self):
        wm = self.scale ** 0.5  # parameter counts grow with the square of the widths
        archs = {
            "resnet18": resnet_shapes((2, 2, 2, 2), False, wm=wm),
            "resnet34_cifar100": resnet_shapes((3, 4, 6, 3), False, num_classes=100, wm=wm),
            "resnet50": resnet_shapes((3, 4, 6, 3), True, wm=wm),
            "vgg_small": vgg_shapes(wm=wm),
            "bert_mini": bert_shapes(4, 256, wm=wm),
            "bert_small": bert_shapes(4, 512, wm=wm),
            "mlp_mnist": mlp_shapes((784, 256, 128, 10)),
            "mlp_wide": mlp_shapes((1024, 4096, 4096, 1000), wm=wm),
        }
        for seed, name in enumerate(archs):
            sd = materialize(archs[name], seed)
            self.save_torch(sd, "benign", "torch", f"{name}_state_dict.pt")
            if name in ("resnet18", "mlp_mnist", "bert_mini"):
                self.save_torch({k: v.half() if v.is_floating_point() else v for k, v in sd.items()},
                                "benign", "torch", f"{name}_fp16.pth")
                self.save_torch(sd, "benign", "torch_legacy", f"{name}_legacy.pt", legacy=True)
                self.emit(self.fx.safetensors_bytes(sd, {"format": "pt", "arch": name}),
                          "benign", "safetensors", f"{name}.safetensors")
            if name == "resnet18":
                self.save_torch({"state_dict": sd, "epoch": 90, "best_acc1": 69.76, "arch": name,
                                 "hyper": {"lr": 0.1, "momentum": 0.9, "milestones": [30, 60]}},
                                "benign", "torch", "resnet18_checkpoint.pth.tar")
        # Real modules: checkpoints with optimizer state, full pickled modules, TorchScript
        torch.manual_seed(0)
        for name, model in (("mlp", nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))),
                            ("transformer", nn.TransformerEncoder(
                                nn.TransformerEncoderLayer(d_model=128, nhead=4, dim_feedforward=512, batch_first=True),
                                num_layers=scaled(4, self.scale)))):
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            sched = torch.optim.lr_scheduler.StepLR(opt, 10)
            x = torch.randn(8, 16, 128) if name == "transformer" else torch.randn(8, 64)
            for _ in range(2):
                loss = model(x).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            self.save_torch({"model": model.state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "epoch": 2, "loss": float(loss),
                             "rng_state": torch.get_rng_state()}, "benign", "checkpoints", f"{name}_train_ckpt.pt")
            self.save_torch(model, "benign", "full_modules", f"{name}_full_module.pt")
            model.eval()
            p = self.path("benign", "torchscript", f"{name}_scripted.pt")
            torch.jit.save(torch.jit.trace(model, x[:1]) if name == "mlp" else torch.jit.script(model), p)
            self.progress.done(p)

    def numpy_files(self):
        rng = np.random.default_rng(11)
        for i, n in enumerate((256, 65536, scaled(4 << 20, self.scale), scaled(16 << 20, self.scale))):
            dtype = (np.float32, np.float64, np.int16, np.float32)[i]
            p = self.path("benign", "numpy", f"array_{n}_{np.dtype(dtype).name}.npy")
            np.save(p, rng.standard_normal(n).astype(dtype))
            self.progress.done(p)
        emb = rng.standard_normal((scaled(20000, self.scale), 300)).astype(np.float32)
        p = self.path("benign", "numpy", "embeddings.npz")
        np.savez(p, vectors=emb, ids=np.arange(len(emb)), words=np.array([f"w{i}" for i in range(1000)]))
        self.progress.done(p)
        p = self.path("benign", "numpy", "embeddings_compressed.npz")
        np.savez_compressed(p, vectors=emb[:5000].round(2), ids=np.arange(5000))
        self.progress.done(p)
        self.emit(pickle.dumps({"mean": rng.standard_normal(512), "std": rng.random(512)}, protocol=2),
                  "benign", "numpy", "stats_p2.pkl")

    def sklearn_files(self):
        X, y = make_classification(n_samples=scaled(5000, self.scale), n_features=32, n_informative=12,
                                   n_classes=3, random_state=0)
        models = {
            "logreg": LogisticRegression(max_iter=300),
            "forest_100": RandomForestClassifier(n_estimators=scaled(100, self.scale), max_depth=12, random_state=0),
            "gbdt": GradientBoostingClassifier(n_estimators=scaled(30, self.scale), max_depth=3, random_state=0),
            "pipeline_svc": Pipeline([("scale", StandardScaler()), ("svc", SVC(probability=False, random_state=0))]),
            "kmeans": KMeans(n_clusters=8, n_init=3, random_state=0),
        }
        for name, m in models.items():
            m.fit(X, y)
            p = self.path("benign", "sklearn", f"{name}.joblib")
            joblib.dump(m, p)
            self.progress.done(p)
        p = self.path("benign", "sklearn", "forest_100_zlib.joblib")
        joblib.dump(models["forest_100"], p, compress=3)
        self.progress.done(p)
        p = self.path("benign", "sklearn", "forest_100_lzma.joblib")
        joblib.dump(models["forest_100"], p, compress=("lzma", 1))
        self.progress.done(p)
        for proto in (2, 4, 5):
            self.emit(pickle.dumps(models["forest_100"], protocol=proto), "benign", "sklearn", f"forest_100_p{proto}.pkl")

    def wrappers(self):
        src = os.path.join(self.out, "benign", "torch", "resnet18_state_dict.pt")
        data = open(src, "rb").read()
        p = self.path("benign", "wrapped", "resnet18_state_dict.pt.gz")
        self.fx.write_gzip(p, data)
        self.progress.done(p)
        self.emit(self.fx.tar_bytes([("model/resnet18.pt", data),
                                     ("model/config.json", b'{"arch": "resnet18", "num_classes": 1000}')]),
                  "benign", "wrapped", "resnet18_bundle.tar")
        small = open(os.path.join(self.out, "benign", "torch", "mlp_mnist_state_dict.pt"), "rb").read()
        p = self.path("benign", "wrapped", "mlp_mnist_state_dict.7z")  # LZMA over random weights is slow: keep it small
        self.fx.write_7z(p, [("mlp_mnist.pt", small)], os.path.join(self.out, ".work7z"))
        shutil.rmtree(os.path.join(self.out, ".work7z"), ignore_errors=True)
        self.progress.done(p)

    # -- big ---------------------------------------------------------------------------------
    def big_files(self):
        budget = int(self.big_gb * 1e9)
        if budget <= 0:
            return
        dense_bytes = min(int(self.dense_mb * 1e6), budget * 15 // 100)
        torch_bytes = budget // 2
        p5_bytes = budget // 4
        p4_bytes = max(0, budget - torch_bytes - p5_bytes - dense_bytes)

        # torch state dict: 4096x4096 float32 tensors (64 MiB each) plus a remainder
        g = torch.Generator().manual_seed(100)
        sd, left, i = {}, torch_bytes, 0
        while left > 0:
            n = min(4096 * 4096, max(1, left // 4))
            sd[f"transformer.h.{i}.mlp.weight"] = torch.empty(n // 4096, 4096) if n >= 4096 else torch.empty(n)
            sd[f"transformer.h.{i}.mlp.weight"].uniform_(-0.05, 0.05, generator=g)
            left -= n * 4
            i += 1
        self.save_torch(sd, "big", "big_state_dict.pt")
        del sd

        rng = np.random.default_rng(101)
        for proto, nbytes in ((5, p5_bytes), (4, p4_bytes)):
            if nbytes < 8:
                continue
            a = rng.random(nbytes // 8)
            p = self.path("big", f"big_ndarray_p{proto}.pkl")
            with open(p, "wb") as f:
                pickle.dump(a, f, protocol=proto)
            del a
            self.progress.done(p)

        # ~27 bytes per (int, float, str) tuple at protocol 4, as in peers/scanner_bench_gen_big.py
        n = max(1000, dense_bytes // 27)
        obj = [(i, float(i) * 0.5, "k%d" % i) for i in range(n)]
        p = self.path("big", "dense_objects.pkl")
        with open(p, "wb") as f:
            pickle.dump(obj, f, protocol=4)
        del obj
        self.progress.done(p)

    def run(self):
        os.makedirs(self.out, exist_ok=True)
        for d in ("benign", "malicious", "malformed", "big"):
            shutil.rmtree(os.path.join(self.out, d), ignore_errors=True)
        print(f"make_scan_corpus: fixtures -> {self.out}", flush=True)
        if self.fx.Fixtures(self.out).run() != 0:
            print("make_scan_corpus: make_fixtures failed", file=sys.stderr)
            return 1
        self.torch_models()
        self.numpy_files()
        self.sklearn_files()
        self.wrappers()
        self.big_files()
        total = sum(os.path.getsize(os.path.join(dp, n)) for dp, _, ns in os.walk(self.out) for n in ns)
        files = sum(len(ns) for _, _, ns in os.walk(self.out))
        print(f"make_scan_corpus: {files} files, {total / 1e9:.2f} GB in {self.out} "
              f"({time.time() - self.progress.start:.0f} s)")
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--big-gb", type=float, default=2.0, help="total size of OUTDIR/big in GB (0: none)")
    ap.add_argument("--scale", type=float, default=1.0, help="size factor for the benign model set")
    ap.add_argument("--dense-mb", type=float, default=107.0, help="cap on the opcode-dense pickle (MB)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    return Corpus(a.outdir, a.scale, a.big_gb, a.dense_mb).run()


if __name__ == "__main__":
    sys.exit(main())
