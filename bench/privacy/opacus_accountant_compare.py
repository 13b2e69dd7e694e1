#!/usr/bin/env python3
"""Aegis's Rényi-DP accountant next to Opacus's, over a grid of DP-SGD settings.

Usage:
    PYTHONPATH=/tmp/opacus /usr/bin/python3 bench/privacy/opacus_accountant_compare.py \\
        [--aegis-grid build/bench/accountant_grid | --aegis-csv grid.csv] [--opacus /tmp/opacus] \\
        [--dp-accounting /tmp/dpacc/python/dp_accounting | --no-pld] [--rows]

Opacus comes from a source tree (no PyPI):
    g=/work/.mirror/pytorch+opacus/repo      # the session's `fetch` of github:pytorch/opacus
    mkdir -p /tmp/opacus && git --git-dir=$g archive HEAD opacus | tar -x -C /tmp/opacus

Importing the `opacus` package needs a newer torch than Debian's 1.13 (torch.func), so this script loads
only what the RDP accountant uses: `opacus/accountants/analysis/rdp.py` (numpy + scipy) and
`opacus/accountants/rdp.py` (the `RDPAccountant` class, with its base class's one torch-dependent import,
`opacus.optimizers.DPOptimizer`, stubbed out; it is only used there as a type).

Google's dp_accounting (optional, for the PLD accountant) also comes from a source tree:
    g=/work/.mirror/google+differential-privacy/repo   # `fetch` of github:google/differential-privacy
    mkdir -p /tmp/dpacc && git --git-dir=$g archive HEAD python/dp_accounting | tar -x -C /tmp/dpacc
It needs absl only for `absl.logging` in its RDP module, which this script stubs with Python's logging
(dm-tree, also listed in its requirements, is not imported by the accountants).

The Aegis side is `bench/privacy/accountant_grid.cpp` (a standalone main; build it with CMake or with
    g++ -std=c++20 -O2 -Isrc src/aegis/privacy/accountant.cpp bench/privacy/accountant_grid.cpp \\
        -o /tmp/accountant_grid
), which prints CSV rows q,sigma,steps,delta,eps_classic,eps_improved,order_classic,order_improved for the
grid q in {0.001, 0.004, 0.01, 0.05} x sigma in {0.5, 0.7, 1.0, 1.3, 2.0} x steps in {100, 1000, 10000},
delta = 1e-5, followed by the three published MNIST runs.

For every row, Opacus gives
  * improved: `RDPAccountant` with history [(sigma, q, steps)] and `get_privacy_spent(delta=...)`, i.e.
    current Opacus's conversion (Balle et al. 2020) over its DEFAULT_ALPHAS;
  * classic:  min over the same orders of compute_rdp(...) + log(1/delta) / (alpha - 1), the formula behind
    Opacus's published 1.16 / 2.91 / 6.86 (computed here from Opacus's own RDP values).
and, unless --no-pld, Aegis's PLD epsilon (driver run with --pld) next to dp_accounting's PLDAccountant
(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)) composed `steps` times, value_discretization_interval
1e-4, the same as Aegis's default) when dp_accounting is found.
Output (Markdown): the max |Aegis - Opacus| per conversion over the grid, how many best orders agree, the
published runs side by side (Aegis, Opacus, published), the PLD comparison, and the time of one epsilon
computation on each side (Aegis: from the driver's stderr; Opacus: best of 5 passes over the grid;
dp_accounting: one pass). --rows adds every row. Exit status 1 when an RDP difference reaches 1e-3.
"""
import argparse
import csv
import importlib.util
import io
import math
import os
import subprocess
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

PUBLISHED = {  # (sigma, steps) at q = 240/60000, delta = 1e-5: (classic as published, improved as Opacus prints it)
    (1.3, 3750): (1.16, 0.922),
    (1.1, 15000): (2.91, 2.503),
    (0.7, 11250): (6.86, 6.093),
}
MNIST_Q = 240 / 60000


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_opacus(root):
    """Return (analysis.rdp module, RDPAccountant class) from an Opacus source tree, without torch."""
    pkg = os.path.join(root, "opacus")
    if not os.path.isdir(pkg):
        sys.exit(f"no Opacus source tree at {root} (expected {pkg}); see the docstring")
    for name, path in (("opacus", pkg), ("opacus.accountants", os.path.join(pkg, "accountants")),
                       ("opacus.accountants.analysis", os.path.join(pkg, "accountants", "analysis"))):
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules[name] = module
    stub = types.ModuleType("opacus.optimizers")
    stub.DPOptimizer = type("DPOptimizer", (), {})
    sys.modules["opacus.optimizers"] = stub
    analysis = load_module("opacus.accountants.analysis.rdp", os.path.join(pkg, "accountants", "analysis", "rdp.py"))
    sys.modules["opacus.accountants.analysis"].rdp = analysis
    try:
        load_module("opacus.accountants.accountant", os.path.join(pkg, "accountants", "accountant.py"))
        accountant_cls = load_module("opacus.accountants.rdp", os.path.join(pkg, "accountants", "rdp.py")).RDPAccountant
    except Exception as error:  # the class is a thin wrapper; fall back to the analysis functions
        print(f"note: could not load opacus.accountants.rdp ({error}); using analysis.rdp directly", file=sys.stderr)
        accountant_cls = None
    return analysis, accountant_cls


def load_dp_accounting(root):
    """Return dp_accounting's PLD epsilon function, or None when its source tree is not there."""
    if not os.path.isdir(os.path.join(root, "dp_accounting")):
        return None
    import logging
    if "absl" not in sys.modules:
        try:
            import absl.logging  # noqa: F401
        except ImportError:
            absl = types.ModuleType("absl")
            absl.logging = logging
            sys.modules["absl"] = absl
            sys.modules["absl.logging"] = logging
    sys.path.insert(0, root)
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    def epsilon(q, sigma, steps, delta):
        accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
        accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
        return accountant.get_epsilon(delta)

    return epsilon


def git_commit(root):
    try:
        return subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return None


def aegis_rows(args):
    timing = ""
    if args.aegis_csv:
        with open(args.aegis_csv) as f:
            text = f.read()
    else:
        binary = args.aegis_grid
        if not os.path.exists(binary):
            sys.exit(f"no Aegis grid driver at {binary}; build bench/privacy/accountant_grid.cpp (see the docstring)")
        done = subprocess.run([binary] + (["--pld"] if args.pld else []), capture_output=True, text=True, check=True)
        text, timing = done.stdout, done.stderr.strip()
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        rows.append({"q": float(r["q"]), "sigma": float(r["sigma"]), "steps": int(r["steps"]), "delta": float(r["delta"]),
                     "eps_classic": float(r["eps_classic"]), "eps_improved": float(r["eps_improved"]),
                     "order_classic": float(r.get("order_classic", "nan")),
                     "order_improved": float(r.get("order_improved", "nan")),
                     "eps_pld": float(r["eps_pld"]) if r.get("eps_pld") else None})
    return rows, timing


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aegis-grid", default=os.environ.get("AEGIS_ACCOUNTANT_GRID",
                                                               os.path.join(ROOT, "build", "bench", "accountant_grid")),
                        help="the accountant_grid executable (default: build/bench/accountant_grid)")
    parser.add_argument("--aegis-csv", help="read the Aegis rows from this CSV instead of running the driver")
    parser.add_argument("--opacus", default=os.environ.get("OPACUS_PATH", "/tmp/opacus"),
                        help="Opacus source tree holding opacus/ (default /tmp/opacus)")
    parser.add_argument("--dp-accounting", default=os.environ.get("DP_ACCOUNTING_PATH", "/tmp/dpacc/python/dp_accounting"),
                        help="dp_accounting source tree holding dp_accounting/ (default /tmp/dpacc/python/dp_accounting)")
    parser.add_argument("--no-pld", dest="pld", action="store_false", help="skip the PLD accountants")
    parser.add_argument("--rows", action="store_true", help="print every row, not only the summary")
    args = parser.parse_args()

    import numpy as np

    analysis, accountant_cls = load_opacus(args.opacus)
    alphas = list(accountant_cls.DEFAULT_ALPHAS) if accountant_cls else [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    orders = np.array(alphas, dtype=float)

    def opacus_improved(q, sigma, steps, delta):
        if accountant_cls is not None:
            accountant = accountant_cls()
            accountant.history = [(sigma, q, steps)]
            return accountant.get_privacy_spent(delta=delta)
        rdp = analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=alphas)
        eps, order = analysis.get_privacy_spent(orders=alphas, rdp=rdp, delta=delta)
        return float(eps), float(order)

    def opacus_classic(q, sigma, steps, delta):
        rdp = np.asarray(analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=alphas))
        eps = rdp + math.log(1 / delta) / (orders - 1)
        k = int(np.nanargmin(eps))
        return float(eps[k]), float(orders[k])

    import warnings
    warnings.simplefilter("ignore")  # Opacus warns when the best order is at the end of the range

    rows, aegis_timing = aegis_rows(args)
    if not rows:
        sys.exit("the Aegis driver printed no rows")
    diffs = {"classic": [], "improved": []}
    order_agree = {"classic": 0, "improved": 0}
    grid, published = [], []
    for r in rows:
        oc, oc_order = opacus_classic(r["q"], r["sigma"], r["steps"], r["delta"])
        oi, oi_order = opacus_improved(r["q"], r["sigma"], r["steps"], r["delta"])
        r.update(opacus_classic=oc, opacus_improved=oi, opacus_order_classic=oc_order, opacus_order_improved=oi_order)
        key = (r["sigma"], r["steps"])
        if abs(r["q"] - MNIST_Q) < 1e-15 and key in PUBLISHED and r["steps"] not in (100, 1000, 10000):
            published.append(r)
            continue
        grid.append(r)
        for conversion in ("classic", "improved"):
            diffs[conversion].append(abs(r[f"eps_{conversion}"] - r[f"opacus_{conversion}"]))
            order_agree[conversion] += r[f"order_{conversion}"] == r[f"opacus_order_{conversion}"]

    # Opacus timing: the same calls as the Aegis driver times (every grid cell, both conversions), best of 5.
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        for r in grid:
            opacus_classic(r["q"], r["sigma"], r["steps"], r["delta"])
            opacus_improved(r["q"], r["sigma"], r["steps"], r["delta"])
        best = min(best, time.perf_counter() - start)
    opacus_ms = 1e3 * best / (2 * len(grid))

    pld_rows, dpa_seconds, dpa_commit = [], 0.0, None
    dpa_epsilon = load_dp_accounting(args.dp_accounting) if args.pld else None
    if args.pld and rows[0]["eps_pld"] is not None:
        for r in grid + published:
            if dpa_epsilon is not None:
                start = time.perf_counter()
                r["dpa_pld"] = dpa_epsilon(r["q"], r["sigma"], r["steps"], r["delta"])
                dpa_seconds += time.perf_counter() - start
            pld_rows.append(r)
        dpa_commit = git_commit(os.path.dirname(os.path.dirname(args.dp_accounting))) if dpa_epsilon else None

    commit = git_commit(args.opacus)
    print(f"Opacus source: {args.opacus}" + (f" (commit {commit})" if commit else "") +
          f"; accountant: {'RDPAccountant' if accountant_cls else 'analysis.rdp'}; {len(alphas)} orders")
    print()
    print(f"Grid: {len(grid)} settings (q x sigma x steps, delta 1e-5)")
    print()
    print("| conversion | max abs diff Aegis vs Opacus | max rel diff | best order agrees |")
    print("| --- | --- | --- | --- |")
    for conversion in ("classic", "improved"):
        rel = max(abs(r[f"eps_{conversion}"] - r[f"opacus_{conversion}"]) / r[f"opacus_{conversion}"] for r in grid)
        print(f"| {conversion} | {max(diffs[conversion]):.3g} | {rel:.3g} | {order_agree[conversion]}/{len(grid)} |")
    print()
    if published:
        print("Published MNIST runs (q = 240/60000, delta = 1e-5):")
        print()
        print("| sigma | steps | classic: Aegis | Opacus | published | improved: Aegis | Opacus | Opacus prints |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in published:
            pub_classic, pub_improved = PUBLISHED[(r["sigma"], r["steps"])]
            print(f"| {r['sigma']} | {r['steps']} | {r['eps_classic']:.6f} | {r['opacus_classic']:.6f} | {pub_classic} | "
                  f"{r['eps_improved']:.6f} | {r['opacus_improved']:.6f} | {pub_improved} |")
        print()
    if pld_rows:
        above = sum(r["eps_pld"] > r["eps_improved"] for r in pld_rows)
        ratio = [r["eps_pld"] / r["eps_improved"] for r in pld_rows]
        print(f"PLD accountant (discretisation 1e-4), {len(pld_rows)} settings (grid + published runs): "
              f"PLD above RDP-improved in {above}; PLD / RDP-improved from {min(ratio):.3f} to {max(ratio):.3f}")
        if dpa_epsilon is not None:
            diff = [abs(r["eps_pld"] - r["dpa_pld"]) for r in pld_rows]
            rel = [abs(r["eps_pld"] - r["dpa_pld"]) / r["dpa_pld"] for r in pld_rows]
            print(f"- vs dp_accounting PLDAccountant" + (f" (commit {dpa_commit})" if dpa_commit else "") +
                  f": max abs diff {max(diff):.3g}, max rel diff {max(rel):.3g}")
        print()
        if published:
            print("| sigma | steps | PLD: Aegis | dp_accounting | RDP improved (Aegis) |")
            print("| --- | --- | --- | --- | --- |")
            for r in published:
                dpa = f"{r['dpa_pld']:.6f}" if "dpa_pld" in r else "-"
                print(f"| {r['sigma']} | {r['steps']} | {r['eps_pld']:.6f} | {dpa} | {r['eps_improved']:.6f} |")
            print()
    print("Time of one epsilon computation (RDP at every order + conversion), every grid cell and both conversions:")
    print()
    print(f"- Opacus (Python {sys.version.split()[0]}, numpy {np.__version__}): {opacus_ms:.3f} ms per call (best of 5 passes)")
    for line in aegis_timing.splitlines():
        print(f"- {line}")
    if pld_rows and dpa_epsilon is not None:
        print(f"- dp_accounting pld: {len(pld_rows)} PLDAccountant epsilons in {dpa_seconds:.3f} s, "
              f"{1e3 * dpa_seconds / len(pld_rows):.1f} ms per call (one pass)")
    if args.rows:
        print()
        print("| q | sigma | steps | classic Aegis | classic Opacus | improved Aegis | improved Opacus | orders (c/i) Aegis | Opacus "
              "| PLD Aegis | PLD dp_accounting |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in grid + published:
            pld = f"{r['eps_pld']:.6f}" if r.get("eps_pld") is not None else "-"
            dpa = f"{r['dpa_pld']:.6f}" if "dpa_pld" in r else "-"
            print(f"| {r['q']:g} | {r['sigma']:g} | {r['steps']} | {r['eps_classic']:.6f} | {r['opacus_classic']:.6f} | "
                  f"{r['eps_improved']:.6f} | {r['opacus_improved']:.6f} | {r['order_classic']:g}/{r['order_improved']:g} | "
                  f"{r['opacus_order_classic']:g}/{r['opacus_order_improved']:g} | {pld} | {dpa} |")
    worst = max(max(diffs["classic"]), max(diffs["improved"]))
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
