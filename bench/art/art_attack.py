#!/usr/bin/python3
"""Run IBM's Adversarial Robustness Toolbox (ART) against a TorchScript Fashion-MNIST classifier.

The peer for `aegis attack`: same model file, same images (the first --limit of the Debian
fashion-mnist test split, pixels / 255), same eps grid. Prints one JSON object on stdout; progress
goes to stderr. ART comes from source (see bench/art/README.md):

    PYTHONPATH=/tmp/art /usr/bin/python3 bench/art/art_attack.py \
        --model examples/fashion-mnist/model.pt --attacks fgsm,pgd,square --eps 0.05,0.1,0.2

Per attack and eps it reports robust_accuracy (% of all N images still classified correctly),
success_rate (% of the clean-correct images the attack flips), seconds (wall time of ART's
generate()) and queries (samples pushed through the model's forward, counted by a wrapper;
gradient_samples are the ones that also went backward). The "reference" block is the floor
for gradient attacks: plain PyTorch doing `steps` forward+backward passes (CE loss, input gradient)
over the same images and batch size, and a plain PyTorch PGD loop whose adversarials should equal
ART's PGD bit for bit (robust accuracy of both is reported).
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
ATTACKS = ("fgsm", "pgd", "apgd", "square", "hsj")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def read_idx_gz(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_test(data_dir, split, limit):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx_gz(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))[:limit]
    y = read_idx_gz(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))[:limit]
    return (x.astype(np.float32) / 255.0)[:, None, :, :], y.astype(np.int64)


def float_list(text):
    return [float(v) for v in text.split(",") if v.strip()] if text else []


class CountingModel(nn.Module):
    """Forwards to the wrapped model and counts the samples it sees (all, and those needing a gradient)."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.forward_samples = 0
        self.gradient_samples = 0

    def reset(self):
        self.forward_samples = 0
        self.gradient_samples = 0

    def forward(self, x):
        n = int(x.shape[0])
        self.forward_samples += n
        if torch.is_grad_enabled() and x.requires_grad:
            self.gradient_samples += n
        return self.net(x)


@torch.no_grad()
def predict(model, x, batch_size):
    out = []
    for i in range(0, len(x), batch_size):
        out.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))).argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def score(model, x_adv, y, clean_ok, batch_size):
    """robust accuracy over all N (a wrong clean prediction counts as not robust) and success rate."""
    adv_ok = (predict(model, x_adv, batch_size) == y) & clean_ok
    n_clean = int(clean_ok.sum())
    return {
        "robust_accuracy": round(100.0 * float(adv_ok.mean()), 3),
        "success_rate": round(100.0 * (n_clean - int(adv_ok.sum())) / n_clean, 3) if n_clean else 0.0,
        "clean_correct": n_clean,
        "successes": n_clean - int(adv_ok.sum()),
    }


def linf_dist(a, b):
    return np.abs(a.reshape(len(a), -1) - b.reshape(len(b), -1)).max(axis=1)


def l2_dist(a, b):
    return np.linalg.norm(a.reshape(len(a), -1) - b.reshape(len(b), -1), axis=1)


# --- the plain PyTorch reference -------------------------------------------------------------------

def plain_fwd_bwd(model, x, y, batch_size, steps):
    """Seconds for `steps` forward+backward passes (mean CE, gradient w.r.t. the input) over x."""
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    t0 = time.perf_counter()
    for i in range(0, len(xt), batch_size):
        xb = xt[i:i + batch_size].clone().requires_grad_(True)
        yb = yt[i:i + batch_size]
        for _ in range(steps):
            (grad,) = torch.autograd.grad(loss_fn(model(xb), yb), xb)
    return time.perf_counter() - t0


def plain_pgd(model, x, y, eps, step_size, steps, batch_size):
    """L-inf PGD from the clean point: sign step, clip to [0,1], project onto the eps ball (ART's order)."""
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    step = torch.tensor(step_size, dtype=torch.float32)
    eps_t = torch.tensor(eps, dtype=torch.float32)
    out = np.empty_like(x)
    for i in range(0, len(xt), batch_size):
        x0, yb = xt[i:i + batch_size], yt[i:i + batch_size]
        xa = x0.clone()
        for _ in range(steps):
            xg = xa.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(model(xg), yb), xg)
            xa = torch.clamp(xa + step * grad.sign(), 0.0, 1.0)
            delta = xa - x0
            xa = x0 + delta.sign() * torch.minimum(delta.abs(), eps_t)
        out[i:i + batch_size] = xa.numpy()
    return out


# --- main ------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="TorchScript classifier: (N,1,28,28) in [0,1] -> logits")
    ap.add_argument("--data", default=DEFAULT_DATA, help="folder with the Fashion-MNIST .gz IDX files")
    ap.add_argument("--split", default="test", choices=["test", "train"])
    ap.add_argument("--limit", type=int, default=1000, help="first N images of the split")
    ap.add_argument("--attacks", default="fgsm,pgd", help="comma list from: " + ",".join(ATTACKS))
    ap.add_argument("--eps", default="0.05,0.1,0.2", help="L-inf budgets for every attack (pixel units, [0,1])")
    for a in ATTACKS:
        ap.add_argument(f"--{a}-eps", default=None, help=f"eps list for {a} only (overrides --eps)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for every timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="run each timed step R times, report the fastest")
    ap.add_argument("--pgd-steps", type=int, default=40)
    ap.add_argument("--pgd-step-size", type=float, default=0.01)
    ap.add_argument("--apgd-steps", type=int, default=40)
    ap.add_argument("--apgd-loss", default="ce,dlr", help="comma list of ce,dlr")
    ap.add_argument("--apgd-restarts", type=int, default=1, help="ART's nb_random_init (APGD always starts random)")
    ap.add_argument("--square-queries", type=int, default=1000, help="SquareAttack max_iter")
    ap.add_argument("--square-p-init", type=float, default=0.8)
    ap.add_argument("--hsj-limit", type=int, default=20, help="HopSkipJump is slow: attack only the first K images")
    ap.add_argument("--hsj-norm", default="inf", choices=["inf", "2"])
    ap.add_argument("--hsj-max-iter", type=int, default=10)
    ap.add_argument("--hsj-max-eval", type=int, default=1000)
    ap.add_argument("--hsj-init-eval", type=int, default=100)
    ap.add_argument("--hsj-init-size", type=int, default=100)
    ap.add_argument("--no-reference", action="store_true", help="skip the plain PyTorch reference")
    ap.add_argument("--ref-steps", type=int, default=None, help="steps for the fwd+bwd floor (default: --pgd-steps)")
    ap.add_argument("--json-out", default=None, help="also write the JSON here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import art
    from art.estimators.classification import PyTorchClassifier
    from art.attacks.evasion import (AutoProjectedGradientDescent, FastGradientMethod, HopSkipJump,
                                     ProjectedGradientDescent, SquareAttack)

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    for a in attacks:
        if a not in ATTACKS:
            ap.error(f"unknown attack {a!r}")

    def eps_for(name):
        override = getattr(args, f"{name}_eps")
        return float_list(override if override is not None else args.eps)

    x, y = load_test(args.data, args.split, args.limit)
    n = len(x)
    net = torch.jit.load(args.model, map_location="cpu").eval()
    counter = CountingModel(net).eval()
    classifier = PyTorchClassifier(model=counter, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                   nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    # a frozen copy for scoring and for the reference: no parameter gradients, no counting
    ref_net = torch.jit.load(args.model, map_location="cpu").eval()
    for p in ref_net.parameters():
        p.requires_grad_(False)

    # warm-up: TorchScript's profiling executor specialises a graph over its first calls
    warm_x = torch.from_numpy(x[:args.batch_size]).clone().requires_grad_(True)
    for model in (net, ref_net):
        for _ in range(3):
            nn.functional.cross_entropy(model(warm_x), torch.from_numpy(y[:args.batch_size])).backward()
    net.zero_grad()

    clean_pred = predict(ref_net, x, args.batch_size)
    clean_ok = clean_pred == y
    report = {
        "tool": "adversarial-robustness-toolbox",
        "art_version": art.__version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "data": args.data,
        "split": args.split,
        "n": n,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "repeat": max(1, args.repeat),
        "clean_accuracy": round(100.0 * float(clean_ok.mean()), 3),
        "definitions": {
            "robust_accuracy": "% of all n images classified correctly after the attack",
            "success_rate": "% of the clean-correct images whose prediction the attack changed",
            "seconds": "wall time of ART's generate() (fastest of `repeat` runs), scoring excluded",
            "queries": "samples through the model's forward during generate(); gradient_samples also went backward",
        },
        "results": [],
    }
    log(f"ART {art.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"n={n}, clean accuracy {report['clean_accuracy']}%")

    def run(name, attack, eps, params, x_in, y_in, extra=None):
        times = []
        for _ in range(max(1, args.repeat)):  # seeded: every repeat does the same work
            np.random.seed(args.seed)
            torch.manual_seed(args.seed)
            counter.reset()
            t0 = time.perf_counter()
            x_adv = attack.generate(x=x_in, y=y_in)
            times.append(time.perf_counter() - t0)
        seconds = min(times)
        queries = {"forward_samples": counter.forward_samples, "gradient_samples": counter.gradient_samples,
                   "per_image": round(counter.forward_samples / len(x_in), 2)}
        row = {"attack": name, "norm": "linf", "eps": eps, "params": params, "n": len(x_in)}
        row.update(score(ref_net, x_adv, y_in, clean_ok[:len(x_in)], args.batch_size))
        row.update({"seconds": round(seconds, 3), "queries": queries})
        if extra:
            row.update(extra)
        report["results"].append(row)
        log(f"{name:7s} eps={eps:<5g} robust {row['robust_accuracy']:6.2f}%  success {row['success_rate']:6.2f}%  "
            f"{seconds:7.2f}s  {queries['per_image']} queries/image")
        return x_adv

    art_pgd = {}
    for name in attacks:
        for eps in eps_for(name):
            if name == "fgsm":
                params = {"batch_size": args.batch_size}
                atk = FastGradientMethod(classifier, norm=np.inf, eps=eps, eps_step=eps, batch_size=args.batch_size)
                run(name, atk, eps, params, x, y)
            elif name == "pgd":
                params = {"steps": args.pgd_steps, "step_size": args.pgd_step_size, "num_random_init": 0,
                          "batch_size": args.batch_size}
                atk = ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=args.pgd_step_size,
                                               max_iter=args.pgd_steps, num_random_init=0,
                                               batch_size=args.batch_size, verbose=False)
                art_pgd[eps] = run(name, atk, eps, params, x, y)
            elif name == "apgd":
                for loss in [v.strip() for v in args.apgd_loss.split(",") if v.strip()]:
                    loss_type = {"ce": "cross_entropy", "dlr": "difference_logits_ratio"}[loss]
                    params = {"loss": loss, "steps": args.apgd_steps, "step_size": 2 * eps,
                              "nb_random_init": args.apgd_restarts, "batch_size": args.batch_size}
                    atk = AutoProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=2 * eps,
                                                       max_iter=args.apgd_steps, nb_random_init=args.apgd_restarts,
                                                       batch_size=args.batch_size, loss_type=loss_type,
                                                       verbose=False)
                    run(f"apgd-{loss}", atk, eps, params, x, y)
            elif name == "square":
                params = {"max_iter": args.square_queries, "p_init": args.square_p_init, "nb_restarts": 1,
                          "batch_size": args.batch_size}
                atk = SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=args.square_queries,
                                   p_init=args.square_p_init, nb_restarts=1, batch_size=args.batch_size,
                                   verbose=False)
                run(name, atk, eps, params, x, y)
        if name == "hsj":
            # decision-based, minimal-perturbation: one run, then scored at every eps by distance
            k = min(args.hsj_limit, n)
            norm = np.inf if args.hsj_norm == "inf" else 2
            params = {"norm": args.hsj_norm, "max_iter": args.hsj_max_iter, "max_eval": args.hsj_max_eval,
                      "init_eval": args.hsj_init_eval, "init_size": args.hsj_init_size}
            atk = HopSkipJump(classifier, batch_size=args.batch_size, targeted=False, norm=norm,
                              max_iter=args.hsj_max_iter, max_eval=args.hsj_max_eval,
                              init_eval=args.hsj_init_eval, init_size=args.hsj_init_size, verbose=False)
            np.random.seed(args.seed)
            counter.reset()
            t0 = time.perf_counter()
            x_adv = atk.generate(x=x[:k], y=y[:k])
            seconds = time.perf_counter() - t0
            adv_wrong = predict(ref_net, x_adv, args.batch_size) != y[:k]
            dist = linf_dist(x_adv, x[:k]) if norm == np.inf else l2_dist(x_adv, x[:k])
            ok = clean_ok[:k]
            queries = {"forward_samples": counter.forward_samples, "gradient_samples": counter.gradient_samples,
                       "per_image": round(counter.forward_samples / k, 2)}
            found = ok & adv_wrong
            median = float(np.median(dist[found])) if found.any() else None
            for eps in eps_for(name):
                robust = ok & ~(adv_wrong & (dist <= eps + 1e-6))
                row = {"attack": "hsj", "norm": "linf" if norm == np.inf else "l2", "eps": eps, "params": params,
                       "n": k, "robust_accuracy": round(100.0 * float(robust.mean()), 3),
                       "success_rate": round(100.0 * (int(ok.sum()) - int(robust.sum())) / max(1, int(ok.sum())), 3),
                       "clean_correct": int(ok.sum()), "successes": int(ok.sum()) - int(robust.sum()),
                       "seconds": round(seconds, 3), "queries": queries,
                       "median_distance_found": None if median is None else round(median, 5),
                       "note": "one run over the first n images, scored at each eps by perturbation size"}
                report["results"].append(row)
                log(f"hsj     eps={eps:<5g} robust {row['robust_accuracy']:6.2f}% (n={k})  {seconds:7.2f}s  "
                    f"{queries['per_image']} queries/image")

    if not args.no_reference:
        steps = args.ref_steps if args.ref_steps is not None else args.pgd_steps
        trainable_net = torch.jit.load(args.model, map_location="cpu").eval()  # parameters require grad, as in ART
        ref = {
            "steps": steps,
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "fwd_bwd_seconds": round(min(plain_fwd_bwd(ref_net, x, y, args.batch_size, steps)
                                         for _ in range(max(1, args.repeat))), 3),
            "fwd_bwd_seconds_param_grads": round(min(plain_fwd_bwd(trainable_net, x, y, args.batch_size, steps)
                                                     for _ in range(max(1, args.repeat))), 3),
            "note": "plain PyTorch, `steps` x (forward + mean CE + backward to the input) over all n images; "
                    "the second figure leaves the parameters requiring grad, as ART's loss_gradient does",
            "plain_pgd": [],
        }
        for eps in (eps_for("pgd") if "pgd" in attacks else []):
            times = []
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                x_plain = plain_pgd(ref_net, x, y, eps, args.pgd_step_size, args.pgd_steps, args.batch_size)
                times.append(time.perf_counter() - t0)
            seconds = min(times)
            row = {"eps": eps, "steps": args.pgd_steps, "step_size": args.pgd_step_size, "seconds": round(seconds, 3)}
            row.update(score(ref_net, x_plain, y, clean_ok, args.batch_size))
            art_row = next(r for r in report["results"] if r["attack"] == "pgd" and r["eps"] == eps)
            row["art_robust_accuracy"] = art_row["robust_accuracy"]
            row["art_seconds"] = art_row["seconds"]
            row["robust_accuracy_equal"] = row["robust_accuracy"] == art_row["robust_accuracy"]
            diff = np.abs(x_plain - art_pgd[eps])
            row["adversarials_identical"] = bool((diff == 0).all())
            row["max_abs_diff_vs_art"] = float(diff.max())
            row["images_differing"] = int((diff.reshape(n, -1).max(1) > 0).sum())
            ref["plain_pgd"].append(row)
            log(f"plain PGD eps={eps:<5g} robust {row['robust_accuracy']:6.2f}% (ART {art_row['robust_accuracy']}%)"
                f"  {seconds:.2f}s (ART {art_row['seconds']}s)  identical={row['adversarials_identical']}")
        report["reference"] = ref
        log(f"reference: {steps} x fwd+bwd over {n} images: {ref['fwd_bwd_seconds']}s "
            f"({ref['fwd_bwd_seconds_param_grads']}s with parameter grads)")

    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
