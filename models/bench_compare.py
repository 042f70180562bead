"""Times sonoedge against the reference engines on the same model files, threads and machine.

For each model folder (fp32 and/or dynamic int8 exports) and each thread count, runs in turn:
`sonoedge bench` (its own process: load + optimize, then timed runs), onnxruntime on the same
.onnx file, and, for an fp32 folder whose sibling `hf/` holds the PyTorch model, PyTorch eager (the
model card's own path). Rounds alternate engines so that machine noise hits all of them alike.
Prints medians of inference time (batch 1, the same preprocessed input) and sonoedge/onnxruntime.
With --also-plain, each round also times `sonoedge bench --plain-tract` (tract's plan without
sonoedge's int8 rewrites): the "before" column of the same run.

    python models/bench_compare.py --sonoedge BIN --models DIR/fp32 DIR/int8 --threads 1 2 --rounds 3 --runs 10 --also-plain
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np


def sonoedge(binary, model_dir, threads, runs, plain=False):
    cmd = [binary, "bench", "--model", str(model_dir), "--threads", str(threads), "--runs", str(runs), "--warmup", "2"]
    out = subprocess.run(cmd + (["--plain-tract"] if plain else []), check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    return r["infer_ms_p50"], r


def onnxruntime_ms(model_dir, threads, runs):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(2):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def torch_ms(hf_dir, threads, runs):
    import torch
    from transformers import ViTForImageClassification
    torch.set_num_threads(threads)
    model = ViTForImageClassification.from_pretrained(hf_dir).eval()
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32))
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sonoedge", required=True)
    ap.add_argument("--models", type=Path, nargs="+", required=True)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--also-plain", action="store_true", help="also time sonoedge with --plain-tract (before the rewrites)")
    args = ap.parse_args()
    rows = []
    for model_dir in args.models:
        hf = model_dir.parent / "hf"
        with_torch = (hf / "config.json").exists() and "int8" not in model_dir.name
        for threads in args.threads:
            res = {"sonoedge": [], "plain_tract": [], "onnxruntime": [], "pytorch": []}
            extra = None
            for _ in range(args.rounds):
                ms, extra = sonoedge(args.sonoedge, model_dir, threads, args.runs)
                res["sonoedge"].append(ms)
                if args.also_plain:
                    res["plain_tract"].append(sonoedge(args.sonoedge, model_dir, threads, args.runs, plain=True)[0])
                res["onnxruntime"].append(onnxruntime_ms(model_dir, threads, args.runs))
                if with_torch:
                    res["pytorch"].append(torch_ms(hf, threads, args.runs))
            med = {k: statistics.median(v) for k, v in res.items() if v}
            row = {"model": str(model_dir), "format": extra["model_format"], "threads": threads, **{f"{k}_ms": round(v, 1) for k, v in med.items()},
                   "sonoedge_over_onnxruntime": round(med["sonoedge"] / med["onnxruntime"], 2),
                   "sonoedge_load_optimize_ms": round(extra["load_optimize_ms"]), "sonoedge_peak_rss_mb": round(extra["peak_rss_mb"]),
                   "sonoedge_preprocess_ms_p50": round(extra["preprocess_ms_p50"], 2)}
            if "pytorch" in med:
                row["sonoedge_over_pytorch"] = round(med["sonoedge"] / med["pytorch"], 2)
            if "plain_tract" in med:
                row["plain_tract_over_onnxruntime"] = round(med["plain_tract"] / med["onnxruntime"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| model | threads | plain tract ms | sonoedge ms | onnxruntime ms | PyTorch ms | plain/ORT | sonoedge/ORT | load+optimize ms | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['threads']} | {r.get('plain_tract_ms', '-')} | {r['sonoedge_ms']} | {r['onnxruntime_ms']} | {r.get('pytorch_ms', '-')} "
              f"| {r.get('plain_tract_over_onnxruntime', '-')} | {r['sonoedge_over_onnxruntime']} | {r['sonoedge_load_optimize_ms']} | {r['sonoedge_peak_rss_mb']} |")


if __name__ == "__main__":
    sys.exit(main())
