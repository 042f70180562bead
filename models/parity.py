"""Parity of `sonoedge classify` with the reference Python stack on a full-size model.

Owns the parity check only: it reads an image folder tree (default: ../shared/busi relative to the
repo root, one subfolder per class, PNGs; files whose name contains "_mask" are skipped) and an
optimum export folder (model.onnx + config.json + preprocessor_config.json, fp32 or int8), runs
the Rust binary on every image and compares its probabilities with the reference:

  * fp32 targets: the transformers pipeline("image-classification", top_k=None). If the folder
    holds PyTorch weights (model.safetensors / pytorch_model.bin) that is the torch model;
    otherwise optimum.onnxruntime.ORTModelForImageClassification on the folder's model.onnx,
    which is what "the pipeline" means for an ONNX export.
  * int8 targets: onnxruntime on the same int8 model.onnx fed the ViTImageProcessor tensor of
    the image loaded as the pipeline loads it (load_image: EXIF transpose + convert("RGB")).

Prints the number of images, max and mean absolute probability difference, top-1 agreement and
the worst 5 images; exits 1 when the targets are missed (fp32: max diff <= 1e-3 and 100% top-1;
int8: max diff <= 2e-2 and >= 98% top-1), 2 on a usage error.

    python models/parity.py --model-dir /var/cache/sonoedge/models/vit-base-random/fp32 --targets fp32
    python models/parity.py --model-dir /var/cache/sonoedge/models/vit-base-random/int8 --targets int8
    python models/parity.py --reference-only --limit 5 ...   # the Python half alone

The sonoedge contract: `sonoedge classify --model PATH [--threads N] IMAGE...` prints one JSON
line per image on stdout, in input order: {"image", "label", "probs": {label: p}, "logits"} or
{"image", "error"}. Images go in batches (--batch, default 50); when a batch dies early its
missing images are retried one per invocation, and whatever still fails is reported per image.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"fp32": dict(max_diff=1e-3, top1=100.0), "int8": dict(max_diff=2e-2, top1=98.0)}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
EXIT_REFUSED = 78  # sonoedge's exit code for a model it will not run


def default_binary():
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    return target / "release" / "sonoedge"


def find_images(root, limit):
    """Image files under root in a stable order, masks skipped; the first `limit` if given."""
    files = sorted(p for p in Path(root).rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and "_mask" not in p.name)
    return files[:limit] if limit else files


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


# ---------------------------------------------------------------------------------------------
# Reference half.

class Reference:
    """Reference probabilities {label: p} per image for the chosen target set."""

    def __init__(self, model_dir, targets, threads):
        import torch
        from transformers import ViTImageProcessor, pipeline
        torch.set_num_threads(threads)
        self.model_dir = Path(model_dir)
        config = json.loads((self.model_dir / "config.json").read_text())
        self.labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        has_torch = any((self.model_dir / f).exists() for f in ("model.safetensors", "pytorch_model.bin"))
        if targets == "fp32":
            if has_torch:
                self.kind = f"transformers pipeline, torch weights in {self.model_dir}"
                self.pipe = pipeline("image-classification", model=str(self.model_dir), top_k=None, device="cpu")
            else:
                from optimum.onnxruntime import ORTModelForImageClassification
                onnx = self._onnx_file()
                session_options = self._session_options(threads)
                model = ORTModelForImageClassification.from_pretrained(
                    self.model_dir, file_name=onnx.name, provider="CPUExecutionProvider",
                    session_options=session_options)
                processor = ViTImageProcessor.from_pretrained(self.model_dir)
                self.kind = f"transformers pipeline + ORTModelForImageClassification({onnx})"
                self.pipe = pipeline("image-classification", model=model, image_processor=processor,
                                     top_k=None, device="cpu")
        else:
            import onnxruntime as ort
            onnx = self._onnx_file()
            self.kind = f"onnxruntime on {onnx} + ViTImageProcessor tensor"
            self.processor = ViTImageProcessor.from_pretrained(self.model_dir)
            self.session = ort.InferenceSession(str(onnx), self._session_options(threads),
                                                providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name
            self.pipe = None

    def _onnx_file(self):
        files = sorted(self.model_dir.glob("*.onnx"))
        if len(files) != 1:
            sys.exit(f"{self.model_dir}: expected exactly one .onnx file, found {[f.name for f in files]}")
        return files[0]

    @staticmethod
    def _session_options(threads):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        return opts

    def probs(self, path):
        if self.pipe is not None:
            return {r["label"]: float(r["score"]) for r in self.pipe(str(path))}
        from transformers.image_utils import load_image
        x = self.processor(load_image(str(path)), return_tensors="np")["pixel_values"].astype(np.float32)
        logits = self.session.run(None, {self.input_name: x})[0][0]
        return dict(zip(self.labels, map(float, softmax(logits))))


# ---------------------------------------------------------------------------------------------
# sonoedge half.

def run_batch(cmd, chunk):
    """One sonoedge invocation: {path: parsed line}; images without a line are left out."""
    try:
        proc = subprocess.run(cmd + chunk, capture_output=True, text=True, timeout=60 + 30 * len(chunk))
    except (OSError, subprocess.TimeoutExpired) as e:
        return {}, f"sonoedge did not run: {e}"
    if proc.returncode == EXIT_REFUSED:
        sys.exit(f"sonoedge refused the model (exit {EXIT_REFUSED}):\n{proc.stderr.strip()}")
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    results = {}
    for i, (p, text) in enumerate(zip(chunk, lines)):
        try:
            line = json.loads(text)
        except json.JSONDecodeError as e:
            line = {"image": p, "error": f"unparsable output line {i}: {e}: {text[:200]}"}
        if line.get("image") != p:
            line = {"image": p, "error": f"output line {i} is for {line.get('image')!r}: out of order"}
        elif "error" not in line and not isinstance(line.get("probs"), dict):
            line = {"image": p, "error": f"output line {i} has neither probs nor error"}
        results[p] = line
    tail = (proc.stderr.strip().splitlines() or [""])[-1]
    return results, f"no output line (exit {proc.returncode}): {tail}"


def run_sonoedge(binary, model_dir, images, threads, batch):
    """{str(path): parsed JSON line} for every image; failures become {"error": ...} per image.

    When a batch dies before printing every line, its missing images are retried one per
    invocation, so one image that crashes the binary does not hide the results of the others."""
    cmd = [str(binary), "classify", "--model", str(model_dir)]
    if threads:
        cmd += ["--threads", str(threads)]
    results = {}
    for start in range(0, len(images), batch):
        chunk = [str(p) for p in images[start:start + batch]]
        got, why = run_batch(cmd, chunk)
        missing = [p for p in chunk if p not in got]
        if missing and len(chunk) > 1:
            print(f"  sonoedge: batch stopped early ({why}); retrying {len(missing)} images one by one",
                  file=sys.stderr)
            for p in missing:
                one, why_one = run_batch(cmd, [p])
                got[p] = one.get(p, {"image": p, "error": why_one})
        for p in chunk:
            results[p] = got.get(p, {"image": p, "error": why})
        print(f"  sonoedge: {min(start + batch, len(images))}/{len(images)} images", file=sys.stderr)
    return results


# ---------------------------------------------------------------------------------------------

def compare(images, reference, ours, labels):
    """Per-image rows: max |p_ours - p_ref| over labels, top-1 of each, or the error."""
    rows = []
    for p in images:
        ref = reference[str(p)]
        got = ours.get(str(p), {"error": "not run"})
        row = {"image": str(p), "ref_label": max(ref, key=ref.get)}
        if "error" in got:
            row.update(error=got["error"], diff=float("inf"))
        elif set(got["probs"]) != set(labels):
            row.update(error=f"labels {sorted(got['probs'])} != {sorted(labels)}", diff=float("inf"))
        else:
            diffs = [abs(float(got["probs"][l]) - ref[l]) for l in labels]
            row.update(diff=max(diffs), mean=float(np.mean(diffs)),
                       label=max(got["probs"], key=lambda l: float(got["probs"][l])))
        rows.append(row)
    return rows


def summarise(rows, targets):
    ok = [r for r in rows if "error" not in r]
    errors = [r for r in rows if "error" in r]
    max_diff = max((r["diff"] for r in ok), default=float("nan"))
    mean_diff = float(np.mean([r["mean"] for r in ok])) if ok else float("nan")
    top1 = 100.0 * sum(r["label"] == r["ref_label"] for r in ok) / len(rows) if rows else 0.0
    print(f"images: {len(rows)} ({len(errors)} errors)")
    print(f"max abs probability difference: {max_diff:.3e}")
    print(f"mean abs probability difference: {mean_diff:.3e}")
    print(f"top-1 agreement: {top1:.2f}% (errors count as disagreements)")
    print("worst 5:")
    for r in sorted(rows, key=lambda r: -r["diff"])[:5]:
        detail = r["error"] if "error" in r else f"diff {r['diff']:.3e} ours {r['label']} ref {r['ref_label']}"
        print(f"  {r['image']}: {detail}")
    t = TARGETS[targets]
    missed = []
    if errors:
        missed.append(f"{len(errors)} images failed")
    if not max_diff <= t["max_diff"]:
        missed.append(f"max diff {max_diff:.3e} > {t['max_diff']}")
    if top1 < t["top1"]:
        missed.append(f"top-1 {top1:.2f}% < {t['top1']}%")
    print(f"targets {targets} (max diff <= {t['max_diff']}, top-1 >= {t['top1']}%): "
          + ("MET" if not missed else "MISSED: " + "; ".join(missed)))
    return not missed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sonoedge", type=Path, default=default_binary(), help="the sonoedge binary (default: %(default)s)")
    ap.add_argument("--model-dir", type=Path, required=True, help="an optimum export folder, fp32 or int8")
    ap.add_argument("--images", type=Path, default=REPO.parent / "shared/busi", help="image folder tree (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (sorted by path)")
    ap.add_argument("--threads", type=int, default=1, help="threads for sonoedge and onnxruntime/torch")
    ap.add_argument("--targets", choices=TARGETS, help="target set (default: int8 if the folder name says int8, else fp32)")
    ap.add_argument("--batch", type=int, default=50, help="images per sonoedge invocation")
    ap.add_argument("--reference-only", action="store_true", help="compute and print the reference half only")
    ap.add_argument("--json", type=Path, help="also write the per-image rows here")
    args = ap.parse_args()
    targets = args.targets or ("int8" if "int8" in args.model_dir.name.lower() else "fp32")

    images = find_images(args.images, args.limit)
    if not images:
        print(f"no images under {args.images}", file=sys.stderr)
        return 2
    if not args.reference_only and not args.sonoedge.is_file():
        print(f"sonoedge binary not found: {args.sonoedge} (cargo build --release, or --sonoedge)", file=sys.stderr)
        return 2

    t0 = time.monotonic()
    ref = Reference(args.model_dir, targets, args.threads)
    print(f"reference ({targets}): {ref.kind}")
    reference = {}
    for i, p in enumerate(images):
        reference[str(p)] = ref.probs(p)
        if args.reference_only:
            probs = " ".join(f"{l}={v:.4f}" for l, v in reference[str(p)].items())
            print(f"  {p}: {probs}")
    t_ref = time.monotonic() - t0
    print(f"reference: {len(images)} images in {t_ref:.1f} s")
    if args.reference_only:
        return 0

    t0 = time.monotonic()
    ours = run_sonoedge(args.sonoedge, args.model_dir, images, args.threads, args.batch)
    print(f"sonoedge: {len(images)} images in {time.monotonic() - t0:.1f} s")
    rows = compare(images, reference, ours, ref.labels)
    met = summarise(rows, targets)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
