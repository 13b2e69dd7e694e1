#!/usr/bin/python3
"""Score `aegis mia`'s per-record membership scores on the evaluation half chosen by art_mia.py, with the
same metrics as art_mia.py, so that Aegis and ART are compared on identical records.

    /usr/bin/python3 bench/privacy/metrics_from_scores.py --scores OUT/mia/scores.csv \
        --members-eval DIR/eval_members.npy --nonmembers-eval DIR/eval_nonmembers.npy --out OUT/aegis_mia_metrics.json

scores.csv (written by `aegis mia --output-dir`): a header `record,member,split,index,<attack1>,<attack2>,...`,
then one row per record: record = 0-based row, member = 1/0, split = train|test, index = the index within
that split, and one column per attack (higher = more likely a member). Members come first, in members.npy
order, then non-members in nonmembers.npy order. --members-eval / --nonmembers-eval hold positions into
members.npy / nonmembers.npy (written by art_mia.py). When members.npy and nonmembers.npy sit next to the
eval files (or are given with --members / --nonmembers), every selected row's split and index are checked
against them. Non-finite scores (NaN, +-inf) are mapped below / beyond the finite ones and counted.
Output: {"peer": "aegis", "attacks": [{"attack": <column>, "auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr",
"balanced_accuracy", ...}]} (JSON on stdout and in --out).
"""
import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FIXED = ("record", "member", "split", "index")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scores", required=True, help="aegis mia's scores.csv")
    ap.add_argument("--members-eval", required=True, help="eval_members.npy (positions into members.npy)")
    ap.add_argument("--nonmembers-eval", required=True, help="eval_nonmembers.npy (positions into nonmembers.npy)")
    ap.add_argument("--members", default=None, help="members.npy (default: next to --members-eval, if there)")
    ap.add_argument("--nonmembers", default=None, help="nonmembers.npy (default: next to --nonmembers-eval)")
    ap.add_argument("--peer", default="aegis", help="the `peer` field of the output")
    ap.add_argument("--out", default="-", help="results JSON (also printed on stdout)")
    args = ap.parse_args()

    with open(args.scores, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        rows = [r for r in reader if r and any(c.strip() for c in r)]
    if tuple(header[:4]) != FIXED:
        sys.exit(f"{args.scores}: header must start with {','.join(FIXED)}, found {','.join(header[:4])}")
    attacks = header[4:]
    if not attacks:
        sys.exit(f"{args.scores}: no attack columns")
    for i, r in enumerate(rows):
        if len(r) != len(header):
            sys.exit(f"{args.scores}: row {i + 2} has {len(r)} fields, the header {len(header)}")

    record = np.array([int(r[0]) for r in rows], dtype=np.int64)
    member = np.array([int(r[1]) for r in rows], dtype=np.int64)
    split = np.array([r[2].strip() for r in rows])
    index = np.array([int(r[3]) for r in rows], dtype=np.int64)
    scores = np.array([[float(v) for v in r[4:]] for r in rows], dtype=np.float64)
    order = np.argsort(record, kind="stable")
    record, member, split, index, scores = record[order], member[order], split[order], index[order], scores[order]
    if not np.array_equal(record, np.arange(len(record))):
        sys.exit(f"{args.scores}: `record` is not 0..{len(record) - 1}")
    m_rows = np.flatnonzero(member == 1)
    n_rows = np.flatnonzero(member == 0)
    if len(m_rows) and len(n_rows) and m_rows.max() > n_rows.min():
        sys.exit(f"{args.scores}: members must come before non-members")

    ev_m = np.load(args.members_eval).astype(np.int64)
    ev_n = np.load(args.nonmembers_eval).astype(np.int64)
    if ev_m.size and (ev_m.min() < 0 or ev_m.max() >= len(m_rows)):
        sys.exit(f"eval member positions out of range: {len(m_rows)} members in {args.scores}")
    if ev_n.size and (ev_n.min() < 0 or ev_n.max() >= len(n_rows)):
        sys.exit(f"eval non-member positions out of range: {len(n_rows)} non-members in {args.scores}")
    sel = np.concatenate([m_rows[ev_m], n_rows[ev_n]])
    is_member = member[sel]

    checked = []
    for kind, given, ev_file, rows_of, want_split in (
            ("members", args.members, args.members_eval, m_rows, "train"),
            ("nonmembers", args.nonmembers, args.nonmembers_eval, n_rows, "test")):
        path = given or os.path.join(os.path.dirname(os.path.abspath(ev_file)), f"{kind}.npy")
        if not os.path.exists(path):
            if given:
                sys.exit(f"missing {path}")
            continue
        ids = np.load(path).astype(np.int64)
        if len(ids) != len(rows_of):
            sys.exit(f"{path} holds {len(ids)} {kind}, {args.scores} {len(rows_of)}")
        bad = (split[rows_of] != want_split) | (index[rows_of] != ids)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            sys.exit(f"{args.scores}: {kind} row {int(rows_of[k])} is {split[rows_of][k]}/{index[rows_of][k]}, "
                     f"{path} says {want_split}/{ids[k]}")
        checked.append(path)

    report = {
        "peer": args.peer,
        "scores": os.path.abspath(args.scores),
        "members": int(len(m_rows)),
        "nonmembers": int(len(n_rows)),
        "eval": {"members": int(len(ev_m)), "nonmembers": int(len(ev_n))},
        "checked_against": checked,
        "definitions": {k: v for k, v in common.MIA_DEFINITIONS.items()
                        if k not in ("balanced_accuracy_own_threshold", "seconds")},
        "attacks": [],
    }
    for j, name in enumerate(attacks):
        row = {"attack": name}
        row.update(common.mia_metrics(scores[sel, j], is_member))
        report["attacks"].append(row)
        common.log(f"  {name:24s} auc {row['auc']:.4f}  tpr@1% {row['tpr_at_1pct_fpr']:.4f}  "
                   f"tpr@0.1% {row['tpr_at_0.1pct_fpr']:.4f}  bal.acc {row['balanced_accuracy']:.4f}")
    common.write_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
