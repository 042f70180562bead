#!/usr/bin/env python3
"""Compares `sonoedge classify` output across architectures: the first JSONL file is the reference
(x86-64); every other must give the same label and probabilities within TOL for every image.
Usage: cross_parity.py TOL REF.jsonl OTHER.jsonl...   (stdlib only; exit 1 on a mismatch)"""
import json
import sys


def load(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    if not rows or any("error" in r for r in rows):
        sys.exit(f"{path}: no results or an error: {rows[:1]}")
    return {r["image"]: r for r in rows}


def main():
    tol, ref_path, others = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
    ref = load(ref_path)
    failed = False
    for path in others:
        got = load(path)
        if got.keys() != ref.keys():
            sys.exit(f"{path}: images differ from {ref_path}")
        diff = max(abs(got[i]["probs"][k] - ref[i]["probs"][k]) for i in ref for k in ref[i]["probs"])
        labels = sum(got[i]["label"] == ref[i]["label"] for i in ref)
        ok = diff <= tol and labels == len(ref)
        failed |= not ok
        print(f"{path.rsplit('/', 1)[-1]}: {len(ref)} images, max |dp| {diff:.3g} vs x86_64 (limit {tol:g}), "
              f"same label {labels}/{len(ref)}: {'OK' if ok else 'FAIL'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
