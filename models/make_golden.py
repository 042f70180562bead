"""Test images made by the project itself, and golden values from the reference Python stack.

Owns tests/fixtures/images/ (small deterministic synthetic images, nothing from a data set) and
tests/fixtures/golden/ (golden.json + the reference preprocessed tensors stored as 8-bit PNGs).

    python models/make_golden.py                  # golden values from the committed images
    python models/make_golden.py --rewrite-images # also regenerate the images first

Images are only written when missing (or with --rewrite-images), so that a newer Pillow or libpng
does not silently change the committed inputs. The golden values need the committed tiny model
(models/tiny-random, made by models/make_models.py).

For every image, golden.json holds:
  * width, height, mode: the file as PIL opens it, before any conversion; exif_orientation.
  * tensor_bilinear / tensor_bicubic: PNG files with the reference preprocessed tensor. The image
    is loaded as the transformers pipeline does (transformers.image_utils.load_image: EXIF
    transpose + convert("RGB")) and run through ViTImageProcessor (resample 2 = bilinear, the
    model's setting, and resample 3 = bicubic). Every tensor value v is (u/255 - 0.5)/0.5 for an
    integer u (checked to 1e-5); the PNG stores u, pixel (x, y) channel c = tensor[0, c, y, x].
  * logits_torch_fp32: ViTForImageClassification (models/tiny-random/hf) on the bilinear tensor.
  * probs_pipeline / label_pipeline: transformers.pipeline("image-classification", top_k=None)
    on the file path, with models/tiny-random/hf.
  * logits_ort_fp32 / logits_ort_int8: onnxruntime (1 thread, graph optimizations disabled so
    the graph is computed as written) on models/tiny-random/{fp32,int8}/model.onnx fed the
    bilinear tensor; logits_ort_int8_default_opts: the same int8 file with onnxruntime's default
    optimizations (fused int8 kernels), to show how much int8 results move between engines.
"""
import argparse
import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import onnxruntime as ort
import PIL
import torch
import transformers
from PIL import Image, ImageDraw
from transformers import ViTForImageClassification, ViTImageProcessor, pipeline
from transformers.image_utils import load_image

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "tests/fixtures/images"
GOLDEN = REPO / "tests/fixtures/golden"
TINY = REPO / "models/tiny-random"


# ---------------------------------------------------------------------------------------------
# Synthetic images. Each generator is seeded; speckle is drawn at a lower resolution and
# upsampled so that the PNGs stay small (pure per-pixel noise does not compress).

def speckle(rng, h, w, block=3, amount=0.35):
    """Multiplicative ultrasound-like speckle around 1.0, smooth over `block` pixels."""
    small = rng.rayleigh(1.0, (h // block + 1, w // block + 1)) / 1.2533  # mean 1
    big = np.asarray(Image.fromarray(small.astype(np.float32), mode="F").resize(
        (w, h), Image.Resampling.BILINEAR))
    return 1.0 + amount * (big - 1.0)


def posterize(a, step):
    """Rounds to multiples of `step`: fewer distinct values keep the PNGs small."""
    return np.round(np.asarray(a, dtype=np.float64) / step) * step


def ultrasound_rgb(rng):
    """400x300 RGB: tinted depth gradient, speckle, a dark ellipse (lesion), coloured marks."""
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 190 - 120 * yy / h + 25 * np.sin(xx / 37.0)
    base *= speckle(rng, h, w, block=4)
    lesion = ((xx - 230) / 70) ** 2 + ((yy - 140) / 42) ** 2 < 1
    base[lesion] *= 0.18
    base = posterize(base, 4)
    rgb = np.stack([base * 1.0, base * 0.92 - 6, base * 0.80], axis=-1)  # warm tint: channels differ
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.line([(160, 95), (300, 185)], fill=(255, 230, 0), width=2)    # yellow caliper
    d.rectangle([8, 8, 60, 28], fill=(0, 200, 255))                  # cyan label box
    d.ellipse([340, 250, 360, 270], outline=(255, 40, 40), width=3)  # red marker
    return img


def grey(rng):
    """640x480 greyscale (mode L): sector-shaped speckle region with a round cyst."""
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot(xx - w / 2, yy + 40)
    ang = np.arctan2(xx - w / 2, yy + 40)
    inside = (r > 60) & (r < 500) & (np.abs(ang) < 0.75)
    val = (150 - 0.18 * r) * speckle(rng, h, w, block=4, amount=0.5)
    val[((xx - 300) ** 2 + (yy - 260) ** 2) < 55 ** 2] *= 0.1
    val = np.where(inside, posterize(val, 3), 6)
    return Image.fromarray(np.clip(val, 0, 255).astype(np.uint8), "L")


def rgba(rng):
    """300x240 RGBA: colour bands under a varying alpha (PIL's convert("RGB") drops alpha)."""
    h, w = 240, 300
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * xx / w
    g = 128 + 100 * np.sin(yy / 19.0)
    b = 255 * (1 - yy / h) * speckle(rng, h, w, amount=0.2)
    a = np.clip(255 * (0.2 + 0.8 * np.hypot(xx - 150, yy - 120) / 190), 0, 255)
    a[:, :20] = 0  # fully transparent strip: its RGB must still be used as is
    arr = np.stack([r, g, b, a], axis=-1)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGBA")


def photo(rng):
    """500x375 RGB saved as JPEG: a colourful smooth scene with a hard-edged shape."""
    h, w = 375, 500
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 110 * np.sin(xx / 41.0) * np.cos(yy / 53.0)
    g = 255 * yy / h
    b = 200 - 150 * xx / w
    arr = np.stack([r, g, b], axis=-1) * speckle(rng, h, w, amount=0.15)[..., None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    ImageDraw.Draw(img).polygon([(300, 60), (460, 140), (380, 320), (250, 240)], fill=(20, 30, 160))
    return img


def small(rng):
    """160x120 RGB, smaller than 224: the processor upscales."""
    h, w = 120, 160
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    v = (140 - 60 * yy / h) * speckle(rng, h, w, block=2, amount=0.4)
    v[((xx - 90) / 30) ** 2 + ((yy - 60) / 20) ** 2 < 1] *= 0.2
    arr = np.stack([v, v * 0.95 + 10 * (xx % 16 < 8), v * 1.05], axis=-1)  # fine stripes in G
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def wide_fan(rng):
    """1280x720 RGB: an ultrasound machine screen, dark with a bright fan-shaped sector."""
    h, w = 720, 1280
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = 640, 60
    r = np.hypot(xx - cx, yy - cy)
    ang = np.arctan2(xx - cx, yy - cy)
    fan = (r > 40) & (r < 640) & (np.abs(ang) < 0.65)
    v = (230 - 0.2 * r) * speckle(rng, h, w, block=6, amount=0.45)
    v[((xx - 700) / 80) ** 2 + ((yy - 380) / 50) ** 2 < 1] *= 0.15  # dark lesion in the fan
    v = np.where(fan, posterize(v, 6), 10)
    img = Image.fromarray(np.clip(np.stack([v, v, v], axis=-1), 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.rectangle([20, 20, 220, 60], fill=(40, 90, 160))        # blue header block
    d.rectangle([1100, 640, 1260, 700], fill=(200, 160, 20))  # amber status block
    for i in range(10):                                         # green depth scale
        d.line([(1000, 80 + 55 * i), (1015, 80 + 55 * i)], fill=(60, 220, 60), width=2)
    return img


def exif_rotated(rng):
    """240x160 JPEG stored sideways with EXIF orientation 6: load_image turns it to 160x240."""
    h, w = 160, 240
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    arr = np.stack([255 * xx / w, 255 * yy / h, 80 + 0 * xx], axis=-1)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    ImageDraw.Draw(img).rectangle([10, 10, 70, 50], fill=(255, 255, 255))  # marks the top-left
    return img


# name -> (generator, save keyword arguments)
SPECS = {
    "ultrasound_rgb.png": (ultrasound_rgb, dict(optimize=True)),
    "grey.png": (grey, dict(optimize=True)),
    "rgba.png": (rgba, dict(optimize=True)),
    "photo.jpg": (photo, dict(quality=90)),
    "small.png": (small, dict(optimize=True)),
    "wide_fan.png": (wide_fan, dict(optimize=True)),
    "exif_rotated.jpg": (exif_rotated, dict(quality=92)),
}


def write_images(rewrite):
    IMAGES.mkdir(parents=True, exist_ok=True)
    for i, (name, (make, kwargs)) in enumerate(SPECS.items()):
        path = IMAGES / name
        if path.exists() and not rewrite:
            continue
        img = make(np.random.default_rng(1000 + i))
        if name == "exif_rotated.jpg":
            exif = Image.Exif()
            exif[0x0112] = 6  # Orientation: rotate 90 CW to display
            kwargs = dict(kwargs, exif=exif.tobytes())
        img.save(path, **kwargs)
        print(f"wrote {path.relative_to(REPO)}: {img.size[0]}x{img.size[1]} {img.mode}, {path.stat().st_size} bytes")
    sizes = {p.name: p.stat().st_size for p in IMAGES.iterdir()}
    if max(sizes.values()) > 150_000 or sum(sizes.values()) > 600_000:
        sys.exit(f"FAIL: fixture images too large: {sizes}")


# ---------------------------------------------------------------------------------------------
# Golden values.

def vit_processor(resample):
    """The committed model's preprocessor, with the resampling filter overridden."""
    proc = ViTImageProcessor.from_pretrained(TINY / "fp32")
    if resample != proc.resample:
        proc = ViTImageProcessor.from_pretrained(TINY / "fp32", resample=resample)
    assert proc.resample == resample
    return proc


def tensor_to_u8(t, name):
    """The uint8 image u with t == (u/255 - 0.5)/0.5; fails loudly if t is not of that form."""
    u = np.rint((t.astype(np.float64) + 1.0) * 127.5)
    back = (u / 255.0 - 0.5) / 0.5
    err = float(np.abs(back - t).max())
    if err > 1e-5 or u.min() < 0 or u.max() > 255:
        sys.exit(f"FAIL: {name}: the tensor is not (u/255 - 0.5)/0.5 of integers u (off by {err})")
    return u.astype(np.uint8)


def ort_session(path, optimize):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def floats(a):
    """float32 values as JSON numbers that round-trip exactly."""
    return [float(v) for v in np.asarray(a, dtype=np.float32).ravel()]


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def make_golden():
    GOLDEN.mkdir(parents=True, exist_ok=True)
    procs = {"bilinear": vit_processor(2), "bicubic": vit_processor(3)}
    model = ViTForImageClassification.from_pretrained(TINY / "hf").eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    clf = pipeline("image-classification", model=str(TINY / "hf"), top_k=None, device="cpu")
    sessions = {
        "fp32": ort_session(TINY / "fp32/model.onnx", False),
        "int8": ort_session(TINY / "int8/model.onnx", False),
        "int8_default_opts": ort_session(TINY / "int8/model.onnx", True),
    }
    entries = []
    for path in sorted(p for p in IMAGES.iterdir() if p.suffix in (".png", ".jpg")):
        rel = str(path.relative_to(REPO))
        with Image.open(path) as raw:
            width, height, mode = raw.width, raw.height, raw.mode
            orientation = raw.getexif().get(0x0112, 1)
        image = load_image(str(path))  # EXIF transpose + convert("RGB"), as the pipeline does
        entry = {"file": rel, "width": width, "height": height, "mode": mode,
                 "exif_orientation": orientation, "loaded_size": list(image.size)}
        tensors = {}
        for kind, proc in procs.items():
            t = proc(image, return_tensors="np")["pixel_values"]
            assert t.shape == (1, 3, 224, 224) and t.dtype == np.float32, (t.shape, t.dtype)
            u = tensor_to_u8(t[0], f"{rel} {kind}")
            out = GOLDEN / f"{path.stem}.{kind}.png"
            Image.fromarray(np.ascontiguousarray(u.transpose(1, 2, 0)), "RGB").save(out, optimize=True)
            entry[f"tensor_{kind}"] = str(out.relative_to(REPO))
            tensors[kind] = t
        x = tensors["bilinear"]
        with torch.no_grad():
            logits_torch = model(torch.from_numpy(x)).logits[0].numpy()
        ort_logits = {k: s.run(None, {"pixel_values": x})[0][0] for k, s in sessions.items()}
        pipe = {r["label"]: float(r["score"]) for r in clf(str(path))}
        # The pipeline must agree with the tensor path above, or the golden values contradict.
        pipe_vs_torch = max(abs(pipe[l] - p) for l, p in zip(labels, softmax(logits_torch)))
        if pipe_vs_torch > 1e-5:
            sys.exit(f"FAIL: {rel}: pipeline and torch-on-reference-tensor differ by {pipe_vs_torch}")
        entry.update({
            "label_pipeline": max(pipe, key=pipe.get),
            "probs_pipeline": {l: pipe[l] for l in labels},
            "logits_torch_fp32": floats(logits_torch),
            "logits_ort_fp32": floats(ort_logits["fp32"]),
            "logits_ort_int8": floats(ort_logits["int8"]),
            "logits_ort_int8_default_opts": floats(ort_logits["int8_default_opts"]),
            "probs_ort_int8": dict(zip(labels, map(float, softmax(ort_logits["int8"])))),
        })
        entries.append(entry)
        print(f"{rel:42s} {mode:5s} {width}x{height} -> {entry['label_pipeline']:9s} "
              f"{' '.join(f'{l}={p:.4f}' for l, p in entry['probs_pipeline'].items())}  "
              f"int8 {max(entry['probs_ort_int8'], key=entry['probs_ort_int8'].get)}")
    if len({e["label_pipeline"] for e in entries}) < 2:
        sys.exit("FAIL: every image gets the same label: the golden values would prove little")
    golden = {
        "notes": ("Made by `python models/make_golden.py` (venv: models/requirements.txt) from "
                  "tests/fixtures/images and models/tiny-random. Reference tensors: "
                  "transformers.image_utils.load_image + ViTImageProcessor.from_pretrained("
                  "models/tiny-random/fp32) with return_tensors='np'; tensor PNG value u means "
                  "(u/255 - 0.5)/0.5, pixel (x,y) channel c = tensor[0,c,y,x]. onnxruntime: "
                  "CPU, 1 thread, graph optimizations disabled (except *_default_opts)."),
        "generator": {"python": sys.version.split()[0], "torch": torch.__version__,
                      "transformers": transformers.__version__, "onnxruntime": ort.__version__,
                      "PIL": PIL.__version__, "numpy": np.__version__},
        "model": "models/tiny-random",
        "labels": labels,
        "preprocessor": {"bilinear": procs["bilinear"].to_dict(), "bicubic_resample": 3},
        "images": entries,
    }
    (GOLDEN / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {(GOLDEN / 'golden.json').relative_to(REPO)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rewrite-images", action="store_true", help="regenerate the committed images too")
    args = ap.parse_args()
    torch.set_num_threads(1)
    write_images(args.rewrite_images)
    make_golden()


if __name__ == "__main__":
    main()
