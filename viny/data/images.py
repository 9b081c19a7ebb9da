"""Decoding any image the real data sets contain into RGB, with errors that name the file.

The full data sets hold grayscale, palette (GIF), RGBA and CMYK images, PNGs saved as
``.jpg`` and truncated JPEGs (docs/data.md lists the known ones); Pillow detects the real format from the
content, and everything becomes 8-bit RGB here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from viny.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "load_rgb", "to_rgb", "resize_rgb", "resize_short_center_crop", "RESAMPLE"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB (alpha dropped, palettes expanded, CMYK converted, 16-bit scaled)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        im = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    elif im.mode == "P":
        im = im.convert("RGBA")  # palette transparency is handled through RGBA
    return im.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` fully (first frame of an animation) into an RGB image.

    Raises :class:`DataError` naming the file when it cannot be decoded (missing,
    truncated, not an image).
    """
    try:
        with Image.open(path) as im:
            im.seek(0)
            im.load()
            return to_rgb(im).copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from None


def resize_rgb(im: Image.Image, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Resize to ``size x size`` (aspect not kept, as in the paper's pipeline) -> uint8 ``[H, W, 3]``."""
    return np.asarray(im.resize((size, size), RESAMPLE[interpolation]), dtype=np.uint8)


def resize_short_center_crop(im: Image.Image, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Resize the shorter side to ``size`` and centre-crop ``size x size`` -> uint8 ``[H, W, 3]``."""
    w, h = im.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    im = im.resize((nw, nh), RESAMPLE[interpolation])
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
