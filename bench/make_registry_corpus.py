#!/usr/bin/python3
"""Build model-registry corpora for timing `aegis scan` against ModelScan on whole registries.

    /usr/bin/python3 bench/make_registry_corpus.py OUTDIR [--small-files 10000] [--big-gb 20]

OUTDIR/small  a Hugging Face cache (hub/models--org--name/{blobs,refs,snapshots/REV}) of many small
              models, snapshot files being symbolic links into blobs/ the way huggingface_hub lays
              them out: --small-files distinct blobs in all (config and tokenizer JSON, PyTorch zip
              and legacy checkpoints, safetensors, Keras .h5 written with h5py, ONNX written with the
              onnx package, joblib pickles, NumPy arrays). One model in fifty carries a payload.
OUTDIR/big    one cache entry of --big-gb GB: sharded safetensors (half), a PyTorch zip checkpoint
              (a quarter), a Keras .h5 (an eighth) and an ONNX model with external data (an eighth).
Everything is written by the real libraries (torch, numpy, h5py, onnx, joblib); weights are seeded.
"""

import argparse
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import sys
import time

import h5py
import joblib
import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(20261126)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class CacheEntry:
    """One models--org--name folder: blobs named by content hash, snapshot names linked to them."""

    def __init__(self, hub, repo_id, revision):
        self.root = os.path.join(hub, "models--" + repo_id.replace("/", "--"))
        self.snapshot = os.path.join(self.root, "snapshots", revision)
        os.makedirs(os.path.join(self.root, "blobs"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "refs"), exist_ok=True)
        os.makedirs(self.snapshot, exist_ok=True)
        with open(os.path.join(self.root, "refs", "main"), "w") as f:
            f.write(revision)
        self.blobs = 0

    def link(self, name, blob_path):
        target = os.path.join(self.snapshot, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.path.relpath(blob_path, os.path.dirname(target)), target)
        self.blobs += 1

    def add(self, name, data):
        blob = os.path.join(self.root, "blobs", sha256(data))
        if not os.path.exists(blob):
            with open(blob, "wb") as f:
                f.write(data)
        self.link(name, blob)

    def add_file(self, name, writer):
        """writer(path) writes a big file; it is then moved into blobs/ under a hash of its name."""
        tmp = os.path.join(self.root, "blobs", ".tmp-" + name.replace("/", "_"))
        writer(tmp)
        blob = os.path.join(self.root, "blobs", sha256((self.root + name).encode()))
        os.replace(tmp, blob)
        self.link(name, blob)


# ---- small artifacts -----------------------------------------------------------------------------
def torch_zip(seed, width):
    g = torch.Generator().manual_seed(seed)
    sd = {"embed.weight": torch.randn(64, width, generator=g), "head.weight": torch.randn(8, width, generator=g),
          "head.bias": torch.zeros(8)}
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def safetensors_bytes(tensors):
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        raw = array.astype(np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def keras_h5(seed, lambda_payload=False):
    layers = [{"class_name": "InputLayer", "config": {"batch_input_shape": [None, 16], "dtype": "float32",
                                                      "name": "input_1"}},
              {"class_name": "Dense", "config": {"name": "dense", "units": 8, "activation": "relu"}}]
    if lambda_payload:
        import marshal
        code = marshal.dumps((lambda x: __import__("os").system("echo aegis-bench")).__code__)
        import base64
        layers.append({"class_name": "Lambda", "config": {"name": "lambda", "function": [
            base64.b64encode(code).decode() + "\n", None, None], "function_type": "lambda", "module": "__main__"}})
    config = {"class_name": "Sequential", "config": {"name": f"sequential_{seed}", "layers": layers}}
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["keras_version"] = b"2.12.0"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([b"dense"])
        d = g.create_group("dense")
        d.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"])
        d.create_dataset("dense/kernel:0", data=RNG.standard_normal((16, 8)).astype(np.float32))
        d.create_dataset("dense/bias:0", data=np.zeros(8, np.float32))
    return buf.getvalue()


def onnx_model(seed, width=16):
    w = numpy_helper.from_array(RNG.standard_normal((width, 8)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(8, np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])],
        f"mlp_{seed}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="bench")
    return model.SerializeToString()


def joblib_bytes(seed):
    buf = io.BytesIO()
    joblib.dump({"coef": RNG.standard_normal(32), "seed": seed, "classes": ["a", "b"]}, buf)
    return buf.getvalue()


def npy_bytes():
    buf = io.BytesIO()
    np.save(buf, RNG.standard_normal((32, 4)).astype(np.float32))
    return buf.getvalue()


class Payload:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def make_small(out, files):
    hub = os.path.join(out, "hub")
    per_model = 10
    models = max(1, files // per_model)
    made = 0
    start = time.time()
    for m in range(models):
        revision = sha256(f"rev{m}".encode())[:40]
        entry = CacheEntry(hub, f"org{m % 37}/model-{m}", revision)
        evil = m % 50 == 49
        width = 8 + m % 9
        entry.add("config.json", json.dumps({"architectures": ["TinyModel"], "hidden_size": width, "id": m}).encode())
        entry.add("tokenizer_config.json", json.dumps({"model_max_length": 512, "id": m}).encode())
        entry.add("pytorch_model.bin", torch_zip(m, width))
        entry.add("model.safetensors", safetensors_bytes({"embed.weight": RNG.standard_normal((64, width)),
                                                          "head.bias": np.full(8, m, np.float32)}))
        entry.add("tf_model.h5", keras_h5(m, lambda_payload=evil and m % 100 == 49))
        entry.add("model.onnx", onnx_model(m, width))
        entry.add("sklearn/model.joblib", joblib_bytes(m))
        entry.add("arrays/mean.npy", npy_bytes())
        if evil:
            entry.add("training_args.bin", pickle.dumps(Payload("echo aegis-bench"), protocol=4))
        else:
            entry.add("training_args.bin", pickle.dumps({"lr": 1e-4, "epochs": 3, "model": m}, protocol=4))
        entry.add("README.md", f"# model-{m}\n\nA tiny model for the registry benchmark.\n".encode())
        made += entry.blobs
        if m % 100 == 99:
            print(f"  small: {made} files in {m + 1} models ({time.time() - start:.0f} s)", file=sys.stderr)
    return made, models


# ---- big artifacts -------------------------------------------------------------------------------
BLOCK = RNG.standard_normal(8 << 20).astype(np.float32)  # 32 MiB of weights, reused to fill big files


def write_weights(f, nbytes):
    raw = BLOCK.tobytes()
    while nbytes > 0:
        chunk = raw[: min(len(raw), nbytes)]
        f.write(chunk)
        nbytes -= len(chunk)


def big_safetensors(path, nbytes, shard):
    n_tensors = 8
    per = (nbytes // n_tensors) // 4 * 4
    header, offset = {}, 0
    for i in range(n_tensors):
        header[f"model.layers.{shard * n_tensors + i}.mlp.weight"] = {
            "dtype": "F32", "shape": [per // 4 // 1024, 1024], "data_offsets": [offset, offset + (per // 4 // 1024) * 1024 * 4]}
        offset += (per // 4 // 1024) * 1024 * 4
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        write_weights(f, offset)


def big_torch(path, nbytes):
    n = nbytes // 4 // 4
    sd = {f"layers.{i}.weight": torch.from_numpy(np.resize(BLOCK, n)) for i in range(4)}
    torch.save(sd, path)


def big_h5(path, nbytes):
    config = {"class_name": "Sequential", "config": {"name": "big", "layers": [
        {"class_name": "Dense", "config": {"name": "dense_big", "units": 1024}}]}}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.12.0"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        g = f.create_group("model_weights").create_group("dense_big")
        rows = nbytes // 4 // 1024
        ds = g.create_dataset("kernel:0", shape=(rows, 1024), dtype=np.float32)
        step = len(BLOCK) // 1024
        for r in range(0, rows, step):
            k = min(step, rows - r)
            ds[r:r + k] = BLOCK[: k * 1024].reshape(k, 1024)


def big_onnx(folder, nbytes):
    rows = nbytes // 4 // 1024
    w = TensorProto()
    w.name = "W"
    w.data_type = TensorProto.FLOAT
    w.dims.extend([rows, 1024])
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "model.onnx.data"), ("offset", "0"), ("length", str(rows * 1024 * 4))):
        e = w.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph([helper.make_node("Gather", ["W", "idx"], ["y"])], "big",
                              [helper.make_tensor_value_info("idx", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="bench")
    with open(os.path.join(folder, "model.onnx.data"), "wb") as f:
        write_weights(f, rows * 1024 * 4)
    return model.SerializeToString()


def make_big(out, gb):
    total = int(gb * 1e9)
    hub = os.path.join(out, "hub")
    entry = CacheEntry(hub, "bigorg/llm-20g", sha256(b"big").__str__()[:40])
    entry.add("config.json", json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 4096}).encode())
    shards = 4
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        entry.add_file(name, lambda p, s=s: big_safetensors(p, total // 2 // shards, s))
        print(f"  big: {name}", file=sys.stderr)
    entry.add_file("pytorch_model.bin", lambda p: big_torch(p, total // 4))
    print("  big: pytorch_model.bin", file=sys.stderr)
    entry.add_file("tf_model.h5", lambda p: big_h5(p, total // 8))
    print("  big: tf_model.h5", file=sys.stderr)
    # ONNX keeps its external data next to the model under the data file's own name.
    onnx_dir = os.path.join(entry.snapshot, "onnx")
    os.makedirs(onnx_dir, exist_ok=True)
    model = big_onnx(onnx_dir, total // 8)
    with open(os.path.join(onnx_dir, "model.onnx"), "wb") as f:
        f.write(model)
    print("  big: onnx/model.onnx + model.onnx.data", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--small-files", type=int, default=10000)
    parser.add_argument("--big-gb", type=float, default=20)
    parser.add_argument("--only", choices=["small", "big"])
    args = parser.parse_args()
    start = time.time()
    if args.only != "big":
        small = os.path.join(args.out, "small")
        shutil.rmtree(small, ignore_errors=True)
        files, models = make_small(small, args.small_files)
        print(f"small: {files} files in {models} models", file=sys.stderr)
    if args.only != "small":
        big = os.path.join(args.out, "big")
        shutil.rmtree(big, ignore_errors=True)
        make_big(big, args.big_gb)
        size = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(big) for n in ns
                   if not os.path.islink(os.path.join(d, n)))
        print(f"big: {size / 1e9:.1f} GB", file=sys.stderr)
    print(f"done in {time.time() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
