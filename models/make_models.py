"""Builds same-architecture ViT image classifiers the way a user's model is made, offline and seeded.

transformers ViTForImageClassification (hand-written ViTConfig) + ViTImageProcessor -> save_pretrained
-> `optimum-cli export onnx` (what users run) -> onnxruntime quantize_dynamic QInt8 (the supported int8)
-> plus a static QDQ file that exists only to test that sonoedge refuses it.

    python models/make_models.py --size tiny --out models/tiny-random
    python models/make_models.py --size base --out /var/cache/sonoedge/models/vit-base-random

Owns models/tiny-random/ (committed: hf/, fp32/, int8/, qdq/) and the full-size benchmark model,
which is never committed. Everything is seeded: the same versions (models/requirements.txt) give
byte-identical files. Nothing is downloaded (HF_HUB_OFFLINE=1).

Output layout under --out:
    hf/    save_pretrained of the torch model + ViTImageProcessor (what a hub checkpoint holds)
    fp32/  model.onnx, config.json, preprocessor_config.json from `optimum-cli export onnx`
    int8/  quantize_dynamic(QInt8) of fp32/model.onnx + the two json files (supported int8)
    qdq/   quantize_static(QDQ) of fp32/model.onnx + the two json files (must be REFUSED)
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

LABELS = {0: "benign", 1: "malignant", 2: "normal"}
SIZES = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
DESCRIPTION_FILES = ("config.json", "preprocessor_config.json")


def processor(resample=2):
    """The real model's ViTImageProcessor settings (224x224 bilinear, 1/255, mean/std 0.5)."""
    return ViTImageProcessor(do_resize=True, size={"height": 224, "width": 224}, resample=resample,
                             do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                             image_mean=[0.5] * 3, image_std=[0.5] * 3)


def probe_images(n=12, seed=1):
    """Varied synthetic images: gradients, noise, dark and bright scenes, blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224] / 223.0
    out = []
    for i in range(n):
        base = [xx, yy, 1 - xx, (xx + yy) / 2][i % 4] * rng.uniform(40, 255)
        img = base[..., None] + rng.normal(0, rng.uniform(5, 60), (224, 224, 3))
        cy, cx, r = rng.uniform(40, 184, 2).tolist() + [rng.uniform(15, 60)]
        img[(yy * 223 - cy) ** 2 + (xx * 223 - cx) ** 2 < r * r] *= rng.uniform(0.1, 1.5)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def build(size, seed):
    """A seeded random ViTForImageClassification of the given size with the three labels."""
    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=224, patch_size=16, num_channels=3, id2label=LABELS,
                    label2id={v: k for k, v in LABELS.items()}, **SIZES[size])
    model = ViTForImageClassification(cfg).eval()
    spread_head(model)
    return model


def spread_head(model):
    """A plain random head predicts one class for every image; widen it so predictions differ.

    The CLS features of a random ViT vary little between images, so the head is rescaled to map
    their spread (measured on probe images) to logits of a few units, and centred so that no
    class wins everywhere. The check below fails loudly if the result still proves nothing."""
    feats = cls_features(model, probe_images())
    centred = feats - feats.mean(0, keepdim=True)
    g = torch.Generator().manual_seed(7)
    w = torch.randn(3, feats.shape[1], generator=g)
    logits = centred @ w.T
    scale = 1.0 / logits.std().clamp_min(1e-6)
    with torch.no_grad():
        model.classifier.weight.copy_(w * scale)
        model.classifier.bias.copy_(-(feats.mean(0) @ (w * scale).T))


def cls_features(model, images):
    """The CLS token features the classifier head sees, for uint8 HWC images."""
    pixel = processor()(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return model.vit(pixel).last_hidden_state[:, 0]


def check_images():
    """Images the head was NOT fitted on: the probe kind plus plain extremes (gradients, noise,
    dark, bright), as uint8 HWC arrays."""
    yy, xx = np.mgrid[0:224, 0:224] / 223.0
    rng = np.random.default_rng(5)
    grey = lambda a: np.repeat(np.clip(a, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    extremes = [
        grey(xx * 255),                                        # horizontal gradient
        grey(yy * 255),                                        # vertical gradient
        rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),   # uniform noise
        grey(np.full((224, 224), 8.0) + rng.normal(0, 4, (224, 224))),     # almost black
        grey(np.full((224, 224), 245.0) + rng.normal(0, 4, (224, 224))),  # almost white
    ]
    return probe_images(seed=2) + extremes


def check_spread(model):
    """Fails if the random head would make a useless fixture: one class for every image, or
    probabilities saturated (max prob > 0.999) on every image."""
    with torch.no_grad():
        pixel = processor()(check_images(), return_tensors="pt")["pixel_values"]
        probs = torch.softmax(model(pixel).logits, -1)
    top = probs.argmax(-1).tolist()
    peak = probs.max(-1).values
    print(f"check predictions: {[LABELS[t] for t in top]}")
    print(f"check max prob per image: {[round(float(p), 3) for p in peak]}")
    if len(set(top)) < 2:
        sys.exit("FAIL: the random head predicts one class for every check image: the fixture would prove nothing")
    if bool((peak > 0.999).all()):
        sys.exit("FAIL: the random head saturates (max prob > 0.999) on every check image")
    return pixel, model(pixel).logits.detach().numpy()


def export(hf_dir, out_fp32):
    """Runs the venv's `optimum-cli export onnx --task image-classification` exactly as a user does,
    into a scratch folder, and keeps only model.onnx + config.json + preprocessor_config.json."""
    cli = Path(sys.executable).with_name("optimum-cli")
    tmp = out_fp32.with_name(out_fp32.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([str(cli), "export", "onnx", "--model", str(hf_dir), "--task", "image-classification", str(tmp)], check=True)
    shutil.rmtree(out_fp32, ignore_errors=True)  # keep exactly the three files, nothing stale
    out_fp32.mkdir(parents=True)
    for name in ("model.onnx",) + DESCRIPTION_FILES:
        shutil.copy(tmp / name, out_fp32 / name)
    shutil.rmtree(tmp)


def copy_description(src, dst):
    """A fresh dst holding config.json + preprocessor_config.json copied from src."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in DESCRIPTION_FILES:
        shutil.copy(src / name, dst / name)


def quantize_dynamic_int8(fp32, int8):
    """The supported int8: dynamic QInt8 weights, per_channel=False (the default users get).
    per_channel=True gives the same operator set (MatMulInteger/ConvInteger/DynamicQuantizeLinear)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    copy_description(fp32, int8)
    quantize_dynamic(str(fp32 / "model.onnx"), str(int8 / "model.onnx"), weight_type=QuantType.QInt8)


class Calibration:
    """A few synthetic images as calibration data for the static QDQ refusal fixture."""

    def __init__(self, input_name):
        pixel = processor()(probe_images(n=4, seed=3), return_tensors="np")["pixel_values"]
        self.items = iter([{input_name: p[None].astype(np.float32)} for p in pixel])

    def get_next(self):
        return next(self.items, None)


def quantize_static_qdq(fp32, qdq):
    """Static QDQ quantization, produced only so that sonoedge's refusal of it is tested."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    copy_description(fp32, qdq)
    name = onnx.load(str(fp32 / "model.onnx")).graph.input[0].name
    quantize_static(str(fp32 / "model.onnx"), str(qdq / "model.onnx"), Calibration(name),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def verify_onnx(out, pixel, torch_logits):
    """onnxruntime on the exported files vs the torch model on the check images: the fp32 export
    must match torch; the int8 and QDQ differences are printed for information."""
    import onnxruntime as ort
    x = pixel.numpy().astype(np.float32)

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    ref = softmax(torch_logits)
    for kind in ("fp32", "int8", "qdq"):
        f = out / kind / "model.onnx"
        if not f.exists():
            continue
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"])
        logits = np.concatenate([sess.run(None, {"pixel_values": x[i:i + 1]})[0] for i in range(len(x))])
        diff = float(np.abs(softmax(logits) - ref).max())
        agree = float((logits.argmax(-1) == torch_logits.argmax(-1)).mean() * 100)
        print(f"onnxruntime {kind}: max |prob - torch prob| {diff:.2e}, top-1 agreement {agree:.0f}%")
        if kind == "fp32" and diff > 1e-4:
            sys.exit(f"FAIL: the fp32 ONNX export disagrees with torch by {diff}")


def report(out, size):
    """Sizes and sha256 of every produced model.onnx (and the tiny fixture's total size)."""
    for f in sorted(out.rglob("model.onnx")):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        print(f"{f}: {f.stat().st_size} bytes sha256 {digest}")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {total} bytes in total")
    if size == "tiny" and total > 2_000_000:
        sys.exit("FAIL: the tiny fixture must stay well under 2 MB")


def save_export_quantize(model, out):
    """What a user does with a trained model: save_pretrained with its processor (out/hf), optimum
    export (out/fp32), dynamic QInt8 (out/int8)."""
    hf = out / "hf"
    shutil.rmtree(hf, ignore_errors=True)
    model.save_pretrained(hf, safe_serialization=True)
    processor().save_pretrained(hf)
    export(hf, out / "fp32")
    quantize_dynamic_int8(out / "fp32", out / "int8")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=SIZES, default="tiny")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-qdq", action="store_true", help="skip the static QDQ refusal fixture")
    args = ap.parse_args()
    model = build(args.size, args.seed)
    pixel, torch_logits = check_spread(model)
    save_export_quantize(model, args.out)
    if not args.no_qdq:
        quantize_static_qdq(args.out / "fp32", args.out / "qdq")
    verify_onnx(args.out, pixel, torch_logits)
    report(args.out, args.size)


if __name__ == "__main__":
    main()
