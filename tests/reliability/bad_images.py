"""A synthetic ImageFolder with the broken and odd files real scraped datasets contain.

``make_folder`` writes ``train/`` (good images plus the odd ones) and a clean ``val/``, and
returns what a correct loader must do with each file: ``skip_upfront`` (found by the cheap scan
before training: not an image, empty, unparseable header, bomb), ``skip_at_load`` (only decoding
shows it: a truncated body, a bomb below PIL's own refusal) or ``train`` (odd but valid: 16-bit,
CMYK, animated, EXIF-rotated, huge, tiny, ...).
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("circle", "square", "stripes")


def _good(cls: int, rng: random.Random, size: int = 32) -> Image.Image:
    """A small image whose class is visible in it (so training has signal)."""
    arr = np.full((size, size, 3), rng.randrange(40, 80), np.uint8)
    colour = [rng.randrange(150, 256) for _ in range(3)]
    yy, xx = np.mgrid[:size, :size]
    if cls == 0:
        mask = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    elif cls == 1:
        mask = (abs(yy - size / 2) < size / 4) & (abs(xx - size / 2) < size / 4)
    else:
        mask = (xx // 4) % 2 == 0
    arr[mask] = colour
    return Image.fromarray(arr)


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _bomb(side: int) -> bytes:
    """A real decompression bomb: a side x side grayscale PNG of zeros, a few hundred KB on disk.

    Written row by row, so making it costs no more memory than reading it should."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    z = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then the pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _odd_files(rng: random.Random) -> list[tuple[str, str, object]]:
    """(kind, file suffix, bytes or None for a plain image in the suffix's format)."""
    bomb = _bomb(20_000)  # 400 MP: PIL itself refuses it at open
    mid = _bomb(10_000)  # 100 MP: only effnet's 90 MP limit stops it
    photo = _good(0, rng, 256)
    out: list[tuple[str, str, object]] = []
    for i in range(10):
        jpg = _jpeg(_good(i % 3, rng, 256))  # big enough that 3/4 keeps the whole header
        png = _png(_good(i % 3, rng, 64))
        out += [
            ("skip_upfront", ".jpg", b""),  # zero bytes
            ("skip_upfront", ".png", rng.randbytes(2_000)),  # random garbage
            ("skip_upfront", ".jpg", b"<html><body>404 Not Found</body></html>\n" * 20),
            ("skip_upfront", [".txt", ".csv", ".json", ".xml", ".pdf"][i % 5], b"x,y\n1,2\n"),
            ("skip_upfront", ".png", png[: len(png) // 2]),  # truncated PNG: chunk CRCs fail
            ("skip_at_load", ".jpg", jpg[: len(jpg) * 3 // 4]),  # truncated JPEG body
        ]
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90° when displayed
        frames = [_good((i + k) % 3, rng) for k in range(3)]
        gif = io.BytesIO()
        frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
        deep = (np.asarray(_good(i % 3, rng).convert("L"), np.uint16) * 257).astype(np.uint16)
        out += [
            ("train", ".png", _png(Image.fromarray(deep))),  # 16-bit grayscale
            ("train", ".jpg", _jpeg(_good(i % 3, rng).convert("CMYK"))),
            ("train", ".gif", gif.getvalue()),  # animated
            ("train", ".jpg", _jpeg(_good(i % 3, rng), exif=exif.tobytes())),
            ("train", ".png", _png(_good(i % 3, rng).convert("RGBA"))),
            ("train", ".png", _png(_good(i % 3, rng).convert("P"))),
            ("train", ".png", _png(_good(i % 3, rng).convert("L"))),
            ("train", [".bmp", ".tiff", ".webp", ".ppm", ".JPG"][i % 5], None),
        ]
    out += [("skip_upfront", ".png", bomb)] * 2
    out += [("skip_at_load", ".png", mid)] * 2
    out += [("train", ".jpg", _jpeg(photo.resize((6_000, 4_000))))] * 2  # 24 MP, valid
    out += [("train", ".png", _png(_good(1, rng).resize((1, 1))))] * 3
    out += [("train", ".png", _png(_good(2, rng).resize((4_000, 8))))] * 3  # extreme aspect
    return out


def _write(path: Path, data, rng: random.Random, cls: int) -> None:
    if data is None:  # a plain image in the format the suffix names
        fmt = {".bmp": "BMP", ".tiff": "TIFF", ".webp": "WEBP", ".ppm": "PPM", ".jpg": "JPEG"}
        _good(cls, rng).save(path, fmt[path.suffix.lower()])
    else:
        path.write_bytes(data)


def make_folder(root: Path, *, total: int = 3000, batch_size: int = 50, seed: int = 0) -> dict:
    """Write the tree; the train files that pass the scan fill whole batches (drop_last)."""
    rng = random.Random(seed)
    odd = _odd_files(rng)
    kinds = [k for k, _, _ in odd]
    upfront, at_load = kinds.count("skip_upfront"), kinds.count("skip_at_load")
    n_good = total - len(odd)
    n_good -= (n_good + len(odd) - upfront) % batch_size  # every scanned file is trained on
    for cls in CLASSES:
        (root / "train" / cls).mkdir(parents=True)
        (root / "val" / cls).mkdir(parents=True)
    for i in range(n_good):
        cls = i % 3
        _good(cls, rng).save(root / "train" / CLASSES[cls] / f"good_{i:05d}.png")
    for i, (_kind, suffix, data) in enumerate(odd):
        cls = i % 3
        _write(root / "train" / CLASSES[cls] / f"odd_{i:04d}{suffix}", data, rng, cls)
    for i in range(60):
        _good(i % 3, rng).save(root / "val" / CLASSES[i % 3] / f"val_{i:03d}.png")
    return {
        "files": n_good + len(odd),
        "odd": len(odd),
        "skip_upfront": upfront,
        "skip_at_load": at_load,
        "train_images": n_good + len(odd) - upfront,
    }


def make_clean_folder(root: Path, *, images: int, seed: int = 0) -> None:
    """The same number of trainable images, all plain: the memory baseline."""
    rng = random.Random(seed)
    for cls in CLASSES:
        (root / "train" / cls).mkdir(parents=True)
        (root / "val" / cls).mkdir(parents=True)
    for i in range(images):
        _good(i % 3, rng).save(root / "train" / CLASSES[i % 3] / f"good_{i:05d}.png")
    for i in range(60):
        _good(i % 3, rng).save(root / "val" / CLASSES[i % 3] / f"val_{i:03d}.png")
