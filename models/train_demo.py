"""Trains the demo model: a tiny ViTForImageClassification on sonoedge's own phantom frames.

The frames come from `sonoedge phantom` (the same renderer as the daemon's synthetic source),
cropped to the fan ROI. Labels follow the phantom's ground truth: no lesion -> normal, round smooth
lesion -> benign, irregular spiculated one -> malignant (frozen and no-signal frames are skipped:
the daemon never infers them). The model is then exported with optimum and quantized to dynamic
QInt8 exactly like a user's model, and checked on phantom seeds disjoint from training.

    python models/train_demo.py --sonoedge target/release/sonoedge --out models/demo
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification

sys.path.insert(0, str(Path(__file__).parent))
from make_models import LABELS, processor, save_export_quantize  # noqa: E402

LABEL_IDS = {v: k for k, v in LABELS.items()}
TRAIN_SEEDS = range(100, 140)
VALID_SEEDS = range(900, 904)


def phantom(sonoedge, seed, count, segment_frames, out):
    subprocess.run([sonoedge, "phantom", "--out", str(out), "--count", str(count), "--seed", str(seed),
                    "--segment-frames", str(segment_frames), "--roi-only"], check=True, stderr=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    return [(out / r["file"], LABEL_IDS[r["label"]]) for r in rows if r["label"] is not None]


def dataset(sonoedge, seeds, count, segment_frames, work):
    items = []
    for seed in seeds:
        items += phantom(sonoedge, seed, count, segment_frames, work / f"seed{seed}")
    proc = processor()
    pixels = [proc(Image.open(p).convert("RGB"), return_tensors="pt")["pixel_values"][0] for p, _ in items]
    return torch.stack(pixels), torch.tensor([label for _, label in items])


def build():
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=224, patch_size=16, num_channels=3, hidden_size=64, num_hidden_layers=4,
                    num_attention_heads=4, intermediate_size=128, id2label=LABELS, label2id=LABEL_IDS)
    return ViTForImageClassification(cfg)


def augment(x):
    """Gain/offset jitter, noise, left-right flips and small shifts: the model should learn lesion
    shape and shadowing, not one gain setting or one position."""
    gain = torch.empty(x.shape[0], 1, 1, 1).uniform_(0.8, 1.2)
    bias = torch.empty(x.shape[0], 1, 1, 1).uniform_(-0.1, 0.1)
    x = ((x + 1) * gain - 1 + bias + 0.03 * torch.randn_like(x)).clamp(-1, 1)
    flip = torch.rand(x.shape[0]) < 0.5
    x[flip] = x[flip].flip(-1)
    dx, dy = torch.randint(-12, 13, (2,)).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def train(model, x, y, epochs, batch=32):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps)
    model.train()
    for epoch in range(epochs):
        perm, total, t0 = torch.randperm(len(x)), 0.0, time.time()
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = torch.nn.functional.cross_entropy(model(augment(x[idx])).logits, y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()


def accuracy(model, x, y):
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 64]).logits.argmax(-1) for i in range(0, len(x), 64)])
    return (pred == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sonoedge", required=True, help="a sonoedge binary (release build recommended)")
    ap.add_argument("--out", type=Path, default=Path("models/demo"))
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--min-accuracy", type=float, default=0.95)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # One frame per segment: every training frame is a new scene (lesion, position, texture).
        x, y = dataset(args.sonoedge, TRAIN_SEEDS, 120, 1, work / "train")
        xv, yv = dataset(args.sonoedge, VALID_SEEDS, 120, 1, work / "valid")
    print(f"train {len(x)} frames {torch.bincount(y).tolist()}, valid {len(xv)}", flush=True)
    model = build()
    train(model, x, y, args.epochs)
    acc = accuracy(model, xv, yv)
    print(f"validation accuracy on seeds {list(VALID_SEEDS)}: {acc:.4f}")
    if acc < args.min_accuracy:
        sys.exit(f"accuracy {acc:.3f} < {args.min_accuracy}: not exporting")
    save_export_quantize(model, args.out)
    shutil.rmtree(args.out / "hf")
    shutil.rmtree(args.out / "fp32")  # only the int8 file is committed; rebuild fp32 with this script
    for f in sorted(args.out.rglob("*.onnx")):
        print(f"{f}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
