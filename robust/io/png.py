"""PNG reading and writing with explicit bit depths (8-bit and 16-bit, gray or RGB)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from robust.io.atomic import atomic_write_bytes


class DataError(ValueError):
    """Bad input data; the message names the file and the problem."""


_MODES_16 = {"I;16", "I;16B", "I;16L", "I"}


def read_png(path: str | os.PathLike, bit_depth: int | None = None) -> np.ndarray:
    """Read a PNG as ``uint8``/``uint16`` ``(H,W)`` or ``(H,W,C)``.

    ``bit_depth`` (8 or 16) is checked against the file; a mismatch raises :class:`DataError`.
    16-bit files are read as ``uint16`` (65535 stays 65535: never through a signed int16).
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in _MODES_16:
                a = np.asarray(img)
                if a.dtype != np.uint16:
                    if a.min() < 0 or a.max() > 65535:
                        raise DataError(f"{path}: 32-bit integer PNG is not a Taskonomy encoding")
                    a = a.astype(np.uint16)
            elif mode in ("L", "RGB"):
                a = np.asarray(img)
            elif mode in ("RGBA", "LA", "P", "1"):
                a = np.asarray(img.convert("RGB" if mode in ("RGBA", "P") else "L"))
            else:
                raise DataError(f"{path}: unsupported PNG mode {mode!r}")
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as e:  # PIL raises many types for corrupt files
        raise DataError(f"{path}: unreadable PNG ({type(e).__name__}: {e})") from e
    found = 16 if a.dtype == np.uint16 else 8
    if bit_depth is not None and found != bit_depth:
        raise DataError(f"{path}: wrong bit depth: expected {bit_depth}-bit, found {found}-bit")
    return a


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode ``uint8`` (gray/RGB) or ``uint16`` (gray) arrays as PNG bytes."""
    if array.dtype == np.uint16:
        if array.ndim != 2:
            raise ValueError("16-bit PNGs must be single-channel (H,W)")
        img = Image.fromarray(array)
    elif array.dtype == np.uint8:
        img = Image.fromarray(array)
    else:
        raise ValueError(f"cannot encode dtype {array.dtype} as PNG")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def write_png(path: str | os.PathLike, array: np.ndarray, compress_level: int = 1) -> Path:
    """Encode and write atomically (temp name, then rename)."""
    return atomic_write_bytes(path, encode_png(array, compress_level))
