"""How an image file becomes the 8-bit RGB image training sees.

:func:`to_rgb` converts by bit depth: Pillow opens a 16-bit grayscale PNG as mode ``I;16`` and its
own ``convert("RGB")`` clips every value above 255, so a normal 16-bit face comes out almost white.
Here the 16-bit range is scaled down to 8 bits instead (65535 -> 255), as an 8-bit copy of the same
face would be.

:data:`DECODE_ERRORS` is what a damaged file raises; :mod:`fer_robust.data.verify` decodes every
image of a split once to find them before training does.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image

__all__ = ["DECODE_ERRORS", "to_rgb"]

# What Pillow raises on a damaged file (UnidentifiedImageError is an OSError; a broken PNG chunk
# is a SyntaxError, a short read an EOFError or struct.error, bad compressed data a zlib.error).
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError,
                                                  struct.error, zlib.error,
                                                  Image.DecompressionBombError)

# Integer modes and the largest value of their bit depth.
_INTEGER_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB, scaling high-bit-depth grayscale to 8 bits (not clipping it).

    Mode ``I`` (32-bit integers) holds 16-bit data when it comes from a PNG or TIFF, and is
    scaled as 16-bit; values beyond 65535 clip.
    """
    if img.mode in _INTEGER_MODES:
        top = _INTEGER_MODES[img.mode]
        pixels = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(pixels * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")  # 2-D uint8 -> mode "L" -> RGB
    return img if img.mode == "RGB" else img.convert("RGB")
