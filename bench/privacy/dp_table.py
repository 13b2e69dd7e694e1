#!/usr/bin/python3
"""Prints the privacy-utility table from dp_experiment.sh's JSON reports.

    /usr/bin/python3 bench/privacy/dp_table.py OUT_DIR EPSILON...
"""
import json
import os
import sys


def pct(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def main(out, epsilons):
    print("| target epsilon | noise multiplier | epsilon spent (improved / classic) | train acc. | test acc. | "
          "best MIA AUC | LiRA TPR @ 0.1% FPR | LiRA TPR @ 1% FPR | seconds (train) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for eps in epsilons:
        with open(os.path.join(out, f"train_{eps}.json")) as f:
            train = json.load(f)
        with open(os.path.join(out, f"mia_{eps}.json")) as f:
            mia = json.load(f)
        p = train["privacy"]
        spent = f"{p['epsilon_improved'] if isinstance(p['epsilon_improved'], str) else round(p['epsilon_improved'], 3)}" \
                f" / {p['epsilon_classic'] if isinstance(p['epsilon_classic'], str) else round(p['epsilon_classic'], 3)}"
        attacks = {a["attack"]: a for a in mia["attacks"]}
        lira = attacks.get("lira-online") or attacks.get("lira-offline") or {}
        best_auc = max(a["auc"] for a in mia["attacks"])
        print(f"| {eps} | {p['noise_multiplier']:.3f} | {spent} | {pct(train['train_accuracy'])} | "
              f"{pct(train['test_accuracy'])} | {best_auc:.3f} | {pct(lira.get('tpr_at_0_1pct_fpr'))} | "
              f"{pct(lira.get('tpr_at_1pct_fpr'))} | {train['training']['seconds']:.1f} |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2:])
