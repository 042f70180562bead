#!/usr/bin/env python3
"""Picks the saved corpus of one target from a libFuzzer merge control file, greedily: each pick is
the file (at most MAX_BYTES) that adds the most code edges not yet covered. Prints how many of
the working corpus's edges the picks keep.

usage: fuzz/pick_corpus.py CONTROL_FILE OUT_DIR [COUNT] [MAX_BYTES]
  (CONTROL_FILE from `TARGET -merge=1 -merge_control_file=CONTROL_FILE EMPTY_DIR WORKING_CORPUS`)
"""

import hashlib
import os
import shutil
import sys

# Covered code edges ("COV"), not libFuzzer's finer features ("FT": edge hit counts and compared
# values), which no few dozen files can keep.
KIND = "COV"


def read_control(path):
    with open(path) as f:
        lines = f.read().splitlines()
    n = int(lines[0])
    files = lines[2:2 + n]
    features = {}
    for line in lines[2 + n:]:
        if line.startswith(KIND + " "):
            parts = line.split()
            features[int(parts[1])] = set(map(int, parts[2:]))
    return files, features


def pick(files, features, count, max_bytes):
    candidates = {i: ft for i, ft in features.items() if os.path.getsize(files[i]) <= max_bytes}
    covered, chosen = set(), []
    while len(chosen) < count and candidates:
        best = max(candidates, key=lambda i: (len(candidates[i] - covered), -os.path.getsize(files[i])))
        if not candidates[best] - covered:
            break
        covered |= candidates.pop(best)
        chosen.append(best)
    return chosen, covered


if __name__ == "__main__":
    control, out = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    max_bytes = int(sys.argv[4]) if len(sys.argv) > 4 else 4096
    files, features = read_control(control)
    chosen, covered = pick(files, features, count, max_bytes)
    everything = set().union(*features.values())
    os.makedirs(out, exist_ok=True)
    for i in chosen:
        with open(files[i], "rb") as f:
            data = f.read()
        shutil.copy(files[i], os.path.join(out, hashlib.sha1(data).hexdigest()[:16]))
    size = sum(os.path.getsize(files[i]) for i in chosen)
    print(f"{len(chosen)} files, {size} bytes, {len(covered)} of {len(everything)} edges ({100 * len(covered) / len(everything):.0f} %)")
