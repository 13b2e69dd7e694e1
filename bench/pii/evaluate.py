#!/usr/bin/python3
"""Scores `aegis pii` end to end against the labels of tests/fixtures/pii_corpus.py.

    /usr/bin/python3 bench/pii/evaluate.py CORPUS_DIR [--aegis build/aegis] [--report REPORT.json] [-- EXTRA AEGIS ARGS]

Runs `aegis pii --format json --max-findings 0` over the corpus's data files (customers.csv,
patients.jsonl, employees.json, deployments.json, crm.sqlite, notes.txt, config_snippets.txt: the
files summary.json lists, not the label files beside them), or reads a report saved before with
--report, and matches every occurrence to the labels (labels.jsonl) and decoys (decoys.jsonl) of
the same unit: file, SQLite table, row (or line for text files) and column.

Matching is the quality test's (tests/privacy/pii_quality_test.cpp): an occurrence of type T is a
true positive when it shares a byte with a label of type T in the same unit, a label is found when
an occurrence of its type shares a byte with it, and a decoy is reported when any occurrence shares
a byte with it. JSON key paths are compared without array indices (`visits.0.date`, `visits[0].date`
and `visits.date` are one column), so that the CLI's spelling of arrays does not matter.

Prints a Markdown table (per entity type: labels, occurrences, TP, FP, FN, precision, recall), the
decoys reported per kind, examples of misses, and the scan's bytes, seconds and MB/s.
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MIN_PRECISION, MIN_RECALL = 0.95, 0.90


def normalise_column(column):
    column = re.sub(r"\[(\d+)\]", r".\1", column or "")
    return ".".join(part for part in column.split(".") if part and not part.isdigit())


def unit_key(item):
    """(file, table, 'row'|'line', number, column) of a label, decoy or finding."""
    file = os.path.basename(item.get("file", ""))
    table = item.get("table") or item.get("member") or ""
    if item.get("row"):  # records; text lines have no row (CSV and JSON Lines findings carry both)
        where = ("row", int(item["row"]))
    else:
        where = ("line", int(item.get("line") or 0))
    return (file, table) + where + (normalise_column(item.get("column", "")),)


def overlaps(a, b):
    return a["begin"] < b["end"] and b["begin"] < a["end"]


def run_aegis(aegis, corpus, extra):
    with open(os.path.join(corpus, "summary.json")) as f:
        files = [os.path.join(corpus, name) for name in json.load(f)["records"]]
    command = [aegis, "pii", "--format", "json", "--max-findings", "0"] + extra + files
    print("evaluate: " + " ".join(command), file=sys.stderr)
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"evaluate: aegis exited {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(done.stdout), wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus")
    parser.add_argument("--aegis", default=os.path.join(ROOT, "build", "aegis"))
    parser.add_argument("--report", help="score this saved `aegis pii --format json --max-findings 0` output")
    parser.add_argument("--examples", type=int, default=5, help="misses shown per entity type")
    parser.add_argument("extra", nargs="*", help="more arguments for aegis pii (after --)")
    args = parser.parse_args()

    if args.report:
        with open(args.report) as f:
            report, wall = json.load(f), None
    else:
        report, wall = run_aegis(args.aegis, args.corpus, args.extra)

    labels = collections.defaultdict(list)
    decoys = collections.defaultdict(list)
    with open(os.path.join(args.corpus, "labels.jsonl")) as f:
        for line in f:
            item = json.loads(line)
            labels[unit_key(item)].append(item)
    with open(os.path.join(args.corpus, "decoys.jsonl")) as f:
        for line in f:
            item = json.loads(line)
            decoys[unit_key(item)].append(item)
    known_files = {key[0] for key in labels} | {key[0] for key in decoys}

    occurrences = collections.defaultdict(list)
    outside = 0
    for finding in report.get("findings", []):
        if "entity_type" not in finding or "begin" not in finding:
            continue  # k-anonymity and unreadable-file findings
        key = unit_key(finding)
        if key[0] not in known_files:
            outside += 1
            continue
        occurrences[key].append(finding)

    stats = collections.defaultdict(lambda: collections.Counter())
    missed, wrong = collections.defaultdict(list), collections.defaultdict(list)
    decoy_total, decoy_hit, decoy_examples = collections.Counter(), collections.Counter(), collections.defaultdict(list)
    for key in set(labels) | set(occurrences) | set(decoys):
        found = occurrences.get(key, [])
        for o in found:
            s = stats[o["entity_type"]]
            s["detections"] += 1
            if any(l["entity_type"] == o["entity_type"] and overlaps(o, l) for l in labels.get(key, [])):
                s["tp"] += 1
            else:
                wrong[o["entity_type"]].append(f"{key} {o.get('rule_id', '')} [{o['begin']},{o['end']}) {o.get('sample', '')}")
        for l in labels.get(key, []):
            s = stats[l["entity_type"]]
            s["labels"] += 1
            if any(o["entity_type"] == l["entity_type"] and overlaps(o, l) for o in found):
                s["found"] += 1
            else:
                other = [o["entity_type"] for o in found if overlaps(o, l)]
                missed[l["entity_type"]].append(f"{key} {l['value']!r}" + (f" reported as {other}" if other else ""))
        for d in decoys.get(key, []):
            decoy_total[d["kind"]] += 1
            hit = [o for o in found if overlaps(o, d)]
            if hit:
                decoy_hit[d["kind"]] += 1
                decoy_examples[d["kind"]].append(f"{key} {d['value']!r} as {hit[0]['entity_type']} ({hit[0].get('rule_id', '')})")

    print("| entity type | labels | occurrences | TP | FP | FN | precision | recall | gate |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    failing = 0
    for entity_type in sorted(stats):
        s = stats[entity_type]
        precision = s["tp"] / s["detections"] if s["detections"] else 1.0
        recall = s["found"] / s["labels"] if s["labels"] else 0.0
        ok = precision >= MIN_PRECISION and recall >= MIN_RECALL
        failing += not ok
        print(f"| {entity_type} | {s['labels']} | {s['detections']} | {s['tp']} | {s['detections'] - s['tp']} | "
              f"{s['labels'] - s['found']} | {precision:.4f} | {recall:.4f} | {'pass' if ok else 'FAIL'} |")
    print()
    print("| decoy kind | decoys | reported |")
    print("|---|---:|---:|")
    for kind in sorted(decoy_total):
        print(f"| {kind} | {decoy_total[kind]} | {decoy_hit[kind]} |")
    print()
    scanned = report.get("bytes") or 0
    seconds = report.get("seconds") or 0
    line = f"aegis pii: {scanned / 1e6:.2f} MB in {seconds:.2f} s"
    if seconds:
        line += f" ({scanned / 1e6 / seconds:.1f} MB/s)"
    if wall is not None:
        line += f"; {wall:.2f} s wall for the whole command"
    print(line + f"; {sum(map(len, occurrences.values()))} occurrences scored"
          + (f", {outside} in files without labels" if outside else ""))
    for entity_type in sorted(set(missed) | set(wrong)):
        for title, items in (("missed", missed[entity_type]), ("false positives", wrong[entity_type])):
            if items:
                step = max(1, len(items) // args.examples)
                print(f"\n{entity_type} {title} ({len(items)}), e.g.:")
                for item in items[::step][:args.examples]:
                    print("    " + item)
    for kind in sorted(decoy_examples):
        print(f"\ndecoy {kind} reported ({decoy_hit[kind]}), e.g.:")
        for item in decoy_examples[kind][:args.examples]:
            print("    " + item)
    sys.exit(1 if failing or sum(decoy_hit.values()) else 0)


if __name__ == "__main__":
    main()
