"""bench/insn_split.py owns the arithmetic of bench/insn_counts.sh: the instruction counts of one
inference (and of the preprocessing beside it) from the plugin's marks, and their split by function
and by operator family.

    python3 bench/insn_split.py --raw DIR --runs 2

Reads every DIR/NAME.CPU.split written by bench/insn_split.c with mark=NR: "total", "tbsum",
"mark" lines (the exact count at each CLOCK_MONOTONIC clock_gettime), per interval between marks
"interval I" and "d N symbol" lines. `sonoedge bench --runs R` reads the clock three times per run
(before preprocessing, after it, after the inference), and nothing after its loop, so the last 3R
marks are its runs: inference = mark[C] - mark[B], preprocessing = mark[B] - mark[A]. The split is
that of the last run's inference interval. Prints markdown tables and writes DIR/summary.json. Only
the standard library and c++filt (binutils) are used.
"""
import argparse
import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path

# Operator families, first match wins, on the demangled name without its hash. Assembly kernels of
# tract-linalg have plain C names (arm64simd_mmm_..., armv7neon_mmm_..., ..._softmax2_..., ...).
FAMILIES = [
    ("preprocess (not inference)", r"sonoedge::preprocess|fast_image_resize|^image::|zune_|png::|jpeg"),
    ("matmul kernel, tract's generic Rust (scalar)", r"tract_linalg::generic::mmm"),
    ("matmul kernel (tract-linalg asm, where its symbol has a size)", r"_mmm_|mmm_(f|i)\d+|_mmv_"),
    ("matmul driver (run_blocked, scratch, thread-local)", r"mmm::run_blocked|LocalKey<T>::with|mmm::scratch"),
    ("packing", r"pack|Pack|panel_bytes|im2col|Patcher"),
    ("sonoedge int8 rewrites (DynQuantU8, sums)", r"sonoedge::infer::rewrite"),
    ("fmaf (software, compiler-rt)", r"^fmaf$"),
    ("softmax / exp / reductions (tract-linalg)", r"softmax|_max_|_sum_|exp2|reduce|Reduce|rms_norm"),
    ("GELU / erf / tanh / sigmoid", r"[Gg]elu|erf|tanh|sigmoid"),
    ("element-wise binary (add, mul, sub, div)", r"binary|Binary|BinMiniOp|mul_|add_|_mul|_add|broadcast"),
    ("quantize / cast / dequant", r"[Qq]uant|[Cc]ast|cast_|OffsetU8asI8"),
    ("memcpy / allocation", r"memcpy|memmove|memset|malloc|free|alloc"),
    ("no symbol: libc, libm, ld.so, and asm kernels whose symbol has no size", r"^\?$"),
]


def demangle(names):
    if not names:
        return {}
    p = subprocess.run(["c++filt"], input="\n".join(names) + "\n", capture_output=True, text=True, check=True)
    out = p.stdout.split("\n")
    return {n: re.sub(r"::h[0-9a-f]{16}$", "", d) for n, d in zip(names, out)}


def read(path):
    total = tbsum = 0
    marks, intervals, cur = [], {}, None
    for line in path.read_text().splitlines():
        f = line.split("\t")
        if f[0] == "total":
            total = int(f[1])
        elif f[0] == "tbsum":
            tbsum = int(f[1])
        elif f[0] == "mark":
            marks.append(int(f[1]))
        elif f[0] == "interval":
            cur = intervals.setdefault(int(f[1]), {})
        elif f[0] == "d":
            cur[f[2]] = cur.get(f[2], 0) + int(f[1])
        elif f[0] == "functions":
            break
    return total, tbsum, marks, intervals


def family(name):
    for fam, rx in FAMILIES:
        if re.search(rx, name):
            return fam
    return "other"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    summary = {}
    for path in sorted(args.raw.glob("*.split")):
        key = path.name[: -len(".split")]
        total, tbsum, marks, intervals = read(path)
        if len(marks) < 3 * args.runs:
            print(f"{key}: only {len(marks)} marks (unfinished or failed run?), skipped")
            continue
        first = len(marks) - 3 * args.runs
        runs = []
        for r in range(args.runs):
            a, b, c = first + 3 * r, first + 3 * r + 1, first + 3 * r + 2
            runs.append({"preprocess": marks[b] - marks[a], "inference": marks[c] - marks[b], "interval": c,
                         "gap_before": marks[a] - marks[a - 1] if a > 0 else None})
        last = runs[-1]
        split = intervals.get(last["interval"], {})
        dm = demangle(sorted(split))
        fams, funcs = defaultdict(int), defaultdict(int)
        for sym, v in split.items():
            fams[family(dm[sym])] += v
            funcs[dm[sym]] += v
        summary[key] = {
            "inference": last["inference"], "preprocess": last["preprocess"],
            "inference_each_run": [r["inference"] for r in runs],
            "preprocess_each_run": [r["preprocess"] for r in runs],
            "gaps_between_runs": [r["gap_before"] for r in runs],
            "process_total": total, "block_level_minus_exact": tbsum - total,
            "split_sum": sum(split.values()),
            "families": dict(sorted(fams.items(), key=lambda x: -x[1])),
            "top_functions": sorted(funcs.items(), key=lambda x: -x[1])[: args.top],
        }
    (args.raw / "summary.json").write_text(json.dumps(summary, indent=1))

    print("| model.CPU | inference, M instructions (counted run) | earlier run | preprocess 1280x720 | whole process |")
    print("|---|---:|---:|---:|---:|")
    for key, s in summary.items():
        print(f"| {key} | **{s['inference'] / 1e6:.2f}** | {s['inference_each_run'][0] / 1e6:.2f} | "
              f"{s['preprocess'] / 1e6:.2f} | {s['process_total'] / 1e9:.2f} G |")
    for key, s in summary.items():
        inf = s["inference"]
        print(f"\n{key}: split of the counted inference ({inf / 1e6:.1f} M; per-function sum {s['split_sum'] / 1e6:.1f} M; "
              f"gaps between runs {s['gaps_between_runs'][1:]} instructions)")
        print("| family | M instructions | share |")
        print("|---|---:|---:|")
        for fam, v in s["families"].items():
            print(f"| {fam} | {v / 1e6:.2f} | {100 * v / inf:.1f} % |")
        print("top functions (M instructions):")
        for f, v in s["top_functions"]:
            print(f"    {v / 1e6:10.2f}  {f[:160]}")


if __name__ == "__main__":
    main()
