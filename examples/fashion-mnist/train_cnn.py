#!/usr/bin/python3
"""Train the small Fashion-MNIST CNN used by the `aegis attack` / `aegis harden` demo.

Reads the real Fashion-MNIST from Debian's fashion-mnist data package (IDX files, parsed here with
gzip + numpy), trains deterministically on one CPU thread and writes, next to this script:

  model.pt       TorchScript (torch.jit.script of the trained nn.Module; parameters kept, trainable)
  model.onnx     ONNX opset 11, dynamic batch axis, only Conv/Relu/MaxPool/Flatten/Gemm
  model_init.pt  TorchScript of the same architecture with its seeded, untrained initial weights

Inputs are (N, 1, 28, 28) float32 pixels / 255 in [0, 1]; outputs are 10 logits.

    /usr/bin/python3 examples/fashion-mnist/train_cnn.py [--data DIR] [--out DIR] [--epochs 2]
"""
import argparse
import gzip
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
HERE = os.path.dirname(os.path.abspath(__file__))
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path):
    """Parse a (optionally gzipped) IDX file into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = raw[2], raw[3]
    if code not in dtypes:
        raise ValueError(f"{path}: unknown IDX type 0x{code:02x}")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtypes[code], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def load_split(data_dir, split):
    """Return (images float32 (N,1,28,28) in [0,1], labels int64 (N,)) for split 'train' or 'test'."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    x = images.astype(np.float32)[:, None, :, :] / 255.0
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


class FashionCNN(nn.Module):
    """conv(1->16) relu pool conv(16->32) relu pool flatten fc(1568->64) relu fc(64->10), logits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


@torch.no_grad()
def accuracy(forward, x, y, batch=1000):
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((forward(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return 100.0 * correct / len(x)


# --- a tiny numpy evaluator for the exported ONNX graph (onnxruntime is not in Debian) -------------

def _attr(node, name, default):
    import onnx
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _conv(x, w, b, pads, strides):
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    top, left, bottom, right = pads[0], pads[1], pads[2], pads[3]
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh = (h + top + bottom - kh) // strides[0] + 1
    ow = (wd + left + right - kw) // strides[1] + 1
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i:i + strides[0] * oh:strides[0], j:j + strides[1] * ow:strides[1]]
    out = np.einsum("nckluv,ockl->nouv", cols, w, optimize=True)
    return out + b.reshape(1, k, 1, 1)


def _maxpool(x, kernel, strides):
    n, c, h, w = x.shape
    oh = (h - kernel[0]) // strides[0] + 1
    ow = (w - kernel[1]) // strides[1] + 1
    out = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            out = np.maximum(out, x[:, :, i:i + strides[0] * oh:strides[0], j:j + strides[1] * ow:strides[1]])
    return out


def run_onnx_numpy(model, x):
    """Evaluate a Conv/Relu/MaxPool/Flatten/Gemm ONNX graph on x (numpy) and return the output."""
    from onnx import numpy_helper
    env = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    env[model.graph.input[0].name] = x
    for node in model.graph.node:
        ins = [env[i] for i in node.input if i]
        if node.op_type == "Conv":
            w = ins[1]
            b = ins[2] if len(ins) > 2 else np.zeros(w.shape[0], dtype=x.dtype)
            out = _conv(ins[0], w, b, list(_attr(node, "pads", [0, 0, 0, 0])),
                        list(_attr(node, "strides", [1, 1])))
        elif node.op_type == "Relu":
            out = np.maximum(ins[0], 0)
        elif node.op_type == "MaxPool":
            k = list(_attr(node, "kernel_shape", None))
            out = _maxpool(ins[0], k, list(_attr(node, "strides", k)))
        elif node.op_type == "Flatten":
            axis = _attr(node, "axis", 1)
            out = ins[0].reshape(int(np.prod(ins[0].shape[:axis])), -1)
        elif node.op_type == "Gemm":
            a, b = ins[0], ins[1]
            if _attr(node, "transA", 0):
                a = a.T
            if _attr(node, "transB", 0):
                b = b.T
            out = _attr(node, "alpha", 1.0) * (a @ b)
            if len(ins) > 2:
                out = out + _attr(node, "beta", 1.0) * ins[2]
        else:
            raise RuntimeError(f"unexpected ONNX op {node.op_type}")
        env[node.output[0]] = out.astype(np.float32)
    return env[model.graph.output[0].name]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="folder with the four Fashion-MNIST .gz IDX files")
    ap.add_argument("--out", default=HERE, help="where model.pt, model.onnx and model_init.pt go")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps the run bit-reproducible)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)

    x_train, y_train = load_split(args.data, "train")
    x_test, y_test = load_split(args.data, "test")
    print(f"data: train {tuple(x_train.shape)}, test {tuple(x_test.shape)} from {args.data}")

    model = FashionCNN()
    init_path = os.path.join(args.out, "model_init.pt")
    torch.jit.script(model).save(init_path)
    print(f"wrote {init_path} (untrained, seed {args.seed}): test accuracy "
          f"{accuracy(model, x_test, y_test):.2f}%")

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        total, seen = 0.0, 0
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
            seen += len(idx)
        model.eval()
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {total / seen:.4f}, "
              f"test accuracy {accuracy(model, x_test, y_test):.2f}%, {time.time() - t0:.1f}s")
    model.eval()

    # TorchScript: script the module itself so the C++ side gets named, trainable parameters.
    pt_path = os.path.join(args.out, "model.pt")
    torch.jit.script(model).save(pt_path)
    loaded = torch.jit.load(pt_path)
    pt_acc = accuracy(loaded, x_test, y_test)
    n_params = sum(p.numel() for p in loaded.parameters())
    assert all(p.requires_grad for p in loaded.parameters())
    print(f"wrote {pt_path}: {n_params} parameters, test accuracy {pt_acc:.2f}%")

    # ONNX: opset 11, dynamic batch; Flatten + Gemm keep OpenCV's importer happy.
    import onnx
    onnx_path = os.path.join(args.out, "model.onnx")
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), onnx_path, opset_version=11,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True)
    onnx_model = onnx.load(onnx_path)
    onnx.checker.check_model(onnx_model)
    ops = [n.op_type for n in onnx_model.graph.node]
    onnx_logits = np.concatenate([run_onnx_numpy(onnx_model, x_test[i:i + 1000].numpy())
                                  for i in range(0, len(x_test), 1000)])
    onnx_acc = 100.0 * float((onnx_logits.argmax(1) == y_test.numpy()).mean())
    with torch.no_grad():
        max_diff = float(np.abs(onnx_logits - model(x_test).numpy()).max())
    print(f"wrote {onnx_path}: ops {' '.join(ops)}; checker ok; test accuracy {onnx_acc:.2f}% "
          f"(numpy evaluation, max |logit diff| vs torch {max_diff:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
