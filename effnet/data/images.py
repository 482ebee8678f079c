"""Robust image decoding: any mode a folder may hold becomes 8-bit RGB, or a clear error."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)

# Refuse decompression bombs early: ~90 MP is far above any training image and below memory trouble.
MAX_PIXELS = int(os.environ.get("EFFNET_MAX_IMAGE_PIXELS", 90_000_000))


class UnreadableImageError(ValueError):
    """A file that cannot be decoded (corrupt, truncated, empty, not an image, too big)."""


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` to an RGB PIL image, applying EXIF rotation.

    Grayscale, RGBA/LA (composited on white), palette, CMYK, 16-bit and float images are converted;
    animated images give their first frame. Raises ``UnreadableImageError`` (a ValueError) with a
    one-line message for anything that is not a decodable image.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such image file: {p}")
    if p.stat().st_size == 0:
        raise UnreadableImageError(f"{p}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise UnreadableImageError(
                        f"{p}: {im.width}x{im.height} exceeds the {MAX_PIXELS:,}-pixel limit"
                    )
                im.seek(0)
                im.load()
                im = ImageOps.exif_transpose(im) or im
                return to_rgb(im)
    except UnreadableImageError:
        raise
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        EOFError,
    ) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UnreadableImageError(f"{p}: not a readable image ({reason})") from None


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit / float: rescale the actual range to 0..255 rather than clipping.
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
