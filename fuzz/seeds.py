#!/usr/bin/env python3
"""Writes the starting inputs of each fuzz target into OUT/<target>/ (python3 with Pillow).

Seeds only: fuzzing grows a working corpus from them, and `cargo fuzz cmin` keeps the inputs that
reach new code; a few dozen of those are saved in fuzz/corpus/ (fuzz/README.md). The header
layouts are those documented on `sonoedge::fuzzing::convert` and `::mjpg`.

usage: fuzz/seeds.py OUT
"""

import io
import os
import random
import struct
import sys
import zlib

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "Sup3rS3cretPw"
RAW_FORMATS = ["rgb24", "bgr24", "grey", "yuyv", "uyvy", "nv12", "yu12"]
rng = random.Random(12)


def write(out, target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def config_seeds(out):
    with open(os.path.join(ROOT, "deploy/sonoedge.toml")) as f:
        write(out, "config", "deploy", f.read())
    head = '[model]\npath = "m"\n'
    sources = {
        "synthetic": '[source]\nkind = "synthetic"\nseed = 7\nfps = 15\nroi = [272, 56, 736, 624]\n',
        "images": '[source]\nkind = "images"\npath = "d"\nfps = 1e-300\nloop = false\n',
        "v4l2": '[source]\nkind = "v4l2"\ndevice = "card:USB3.0 Capture"\nformat = "MJPG"\nwidth = 1920\nheight = 1080\n'
        'fps = 29.97\nbuffers = 4\ninterlace = "blend"\nroi = [0, 0, 100000, 100000]\n',
        "fan": '[source]\nkind = "synthetic"\n[source.fan]\norigin_px = [960, 100]\nangles_deg = [-35, 35]\n'
        "radius_start_px = 40\nradius_stop_px = 860\n",
    }
    for name, source in sources.items():
        write(out, "config", name, head + source)
    synthetic = head + sources["synthetic"]
    extras = {
        "pipeline": "[pipeline]\nmax_fps = 1e-300\nno_signal_luma = nan\nfrozen_mad = -inf\n",
        "mqtt": '[mqtt]\nurl = "mqtts://broker:8883"\nqos = 2\ntopic_prefix = "p"\nstats_interval_s = 9223372036854775807\n'
        'queue_capacity = 1000000000\nkeep_alive_s = 65536\nusername = "u"\npassword_file = "/p"\nca_file = "/c"\n'
        'client_cert = "/x"\n',
        "threads": 'device_id = "cart-3"\n[model]\nthreads = 0\nlabels = ["a", ""]\npreprocessor = "/p.json"\n',
        "secret_url": f'[mqtt]\nurl = "mqtt://operator:{SECRET}@127.0.0.1:1883"\n',
        "secret_syntax": f'[mqtt]\nurl = "mqtt://operator:{SECRET}@127.0.0.1:1883\n',
        "secret_type": f'[mqtt]\nqos = "operator:{SECRET}@host"\n',
        "secret_key": f'[mqtt]\nbroker = "mqtt://operator:{SECRET}@host"\n',
    }
    for name, extra in extras.items():
        write(out, "config", name, synthetic + extra)


def line_bytes(fmt, w):
    return {"rgb24": 3 * w, "bgr24": 3 * w, "yuyv": (w + 1) // 2 * 4, "uyvy": (w + 1) // 2 * 4}.get(fmt, w)


def frame_bytes(fmt, w, h, stride):
    ch = (h + 1) // 2
    if fmt == "nv12":
        return stride * h + stride * (ch - 1) + 2 * ((w + 1) // 2)
    if fmt == "yu12":
        return stride * h + stride // 2 * ch + stride // 2 * (ch - 1) + (w + 1) // 2
    return stride * (h - 1) + line_bytes(fmt, w)


def convert_seeds(out):
    for i, fmt in enumerate(RAW_FORMATS):
        for w, h, pad, flags in [(8, 4, 0, 0), (7, 5, 3, 0x38), (1, 1, 0, 0x10), (33, 17, 1, 0x60), (16, 9, 0, 0xA8)]:
            mul = {"rgb24": 3, "bgr24": 3, "yuyv": 2, "uyvy": 2}.get(fmt, 1)
            stride = w * mul + pad + (2 if fmt in ("yuyv", "uyvy") and w % 2 else 0)
            extra = stride - w * mul
            roi = [rng.randrange(0x8000), rng.randrange(0x10000), rng.randrange(0x10000), rng.randrange(0x10000)]
            header = struct.pack("<BHHBB4H", i | flags, w, h, mul, extra, *roi)
            data = bytes(rng.randrange(256) for _ in range(frame_bytes(fmt, w, h, stride)))
            write(out, "convert", f"{fmt}_{w}x{h}_{flags:02x}", header + data)


def jpeg(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def without_dht(data):
    """The JPEG with its Huffman tables removed, as many UVC cameras send MJPG."""
    out, i = bytearray(data[:2]), 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker == 0xDA:
            return bytes(out + data[i:])
        if marker != 0xC4:
            out += data[i:i + 2 + length]
        i += 2 + length
    return bytes(out)


def noise_image(mode, w, h):
    img = Image.frombytes("RGB", (w, h), bytes(rng.randrange(256) for _ in range(w * h * 3)))
    return img.convert(mode)


def mjpg_seeds(out):
    jpegs = {
        "420": (16, 16, jpeg(noise_image("RGB", 16, 16), subsampling=2)),
        "422_odd": (17, 13, jpeg(noise_image("RGB", 17, 13), subsampling=1)),
        "444": (8, 8, jpeg(noise_image("RGB", 8, 8), subsampling=0)),
        "grey": (24, 8, jpeg(noise_image("L", 24, 8))),
        "progressive": (16, 16, jpeg(noise_image("RGB", 16, 16), progressive=True)),
        "optimized": (32, 16, jpeg(noise_image("RGB", 32, 16), optimize=True)),
        "no_dht": (16, 16, without_dht(jpeg(noise_image("RGB", 16, 16)))),
        "padded": (16, 16, jpeg(noise_image("RGB", 16, 16)) + bytes(9)),
    }
    for name in ["mjpg_422", "mjpg_444"]:
        with open(os.path.join(ROOT, f"tests/fixtures/pixfmt/{name}.jpg"), "rb") as f:
            jpegs[name] = (32, 48, f.read())
    for name, (w, h, data) in jpegs.items():
        for flags, roi in [(0, [0, 0, 0xFFFF, 0xFFFF]), (0x60, [3, 1, 5, 7])]:
            write(out, "mjpg", f"{name}_{flags:02x}", struct.pack("<BHH4H", flags, w, h, *roi) + data)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(w, h, depth=8, color=0):
    """A PNG's header declaring w x h with a token IDAT: a bomb without its zeros."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def saved(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def still_seeds(out):
    stills = {
        "grey.png": saved(noise_image("L", 17, 9), "PNG"),
        "grey_alpha.png": saved(noise_image("LA", 9, 9), "PNG"),
        "rgb.png": saved(noise_image("RGB", 16, 8), "PNG"),
        "rgba_interlaced.png": saved(noise_image("RGBA", 12, 12), "PNG", interlace=1),
        "palette.png": saved(noise_image("P", 10, 6), "PNG"),
        "deep.png": saved(noise_image("I;16", 8, 8), "PNG"),
        "bilevel.png": saved(noise_image("1", 13, 3), "PNG"),
        "baseline.jpg": jpeg(noise_image("RGB", 16, 16)),
        "progressive.jpg": jpeg(noise_image("RGB", 17, 11), progressive=True),
        "grey.jpg": jpeg(noise_image("L", 8, 24)),
        "cmyk.jpg": jpeg(noise_image("CMYK", 8, 8)),
        "rgb.bmp": saved(noise_image("RGB", 7, 5), "BMP"),
        "palette.bmp": saved(noise_image("P", 9, 4), "BMP"),
        "rgba.bmp": saved(noise_image("RGBA", 4, 4), "BMP"),
        "bomb_60000.png": png_header_only(60000, 60000),
        "bomb_1024_rgba16.png": png_header_only(1024, 1024, 16, 6),
        "bomb_1024.png": png_header_only(1024, 1024),
    }
    with open(os.path.join(ROOT, "tests/fixtures/images/exif_rotated.jpg"), "rb") as f:
        stills["exif_rotated.jpg"] = f.read()
    for name, data in stills.items():
        write(out, "still", name, data)


if __name__ == "__main__":
    config_seeds(sys.argv[1])
    convert_seeds(sys.argv[1])
    mjpg_seeds(sys.argv[1])
    still_seeds(sys.argv[1])
