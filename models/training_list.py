#!/usr/bin/env python3
"""Makes the `--training-list` file for `sonoedge eval` from a training folder.

One line per training image: the sha256 of its decoded pixels (EXIF orientation applied, then
8-bit RGB rows, as `sonoedge eval` hashes them), two spaces, and its path for a reader's
benefit. `--file-hash` writes the sha256 of the file's bytes instead (catches only byte-identical
copies; pixel hashes also catch a re-encoded PNG). Segmentation masks (`*_mask*`) are skipped.
Only hashes and the training folder's own paths go into the list, never pixels.

    pip install pillow
    python3 models/training_list.py TRAIN_DIR > training.sha256
    sonoedge eval --model M --data EVAL_DIR --training-list training.sha256
"""
import argparse
import hashlib
import pathlib
import sys

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp"}


def pixel_sha256(path):
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        return hashlib.sha256(ImageOps.exif_transpose(img).convert("RGB").tobytes()).hexdigest()


def file_sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=pathlib.Path, help="the training images (any layout; searched recursively)")
    ap.add_argument("--file-hash", action="store_true", help="hash the files' bytes instead of their pixels")
    args = ap.parse_args()
    digest = file_sha256 if args.file_hash else pixel_sha256
    kind = "file bytes" if args.file_hash else "decoded RGB pixels"
    print(f"# sha256 of {kind}, made by models/training_list.py from {args.folder}")
    count = 0
    for path in sorted(args.folder.rglob("*")):
        if path.suffix.lower() not in EXTENSIONS or "_mask" in path.stem.lower():
            continue
        print(f"{digest(path)}  {path.relative_to(args.folder)}")
        count += 1
    print(f"{count} images hashed", file=sys.stderr)


if __name__ == "__main__":
    main()
