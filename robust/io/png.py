"""PNG reading and writing with explicit bit depths (8-bit and 16-bit, gray or RGB).

Reading decodes with OpenCV's libpng (no colour conversion: BGR becomes RGB by a flipped view) and falls back to
Pillow for anything it cannot decode, which also names the problem of a broken file.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from robust.io.atomic import atomic_write_bytes


class DataError(ValueError):
    """Bad input data; the message names the file and the problem."""


_MODES_16 = {"I;16", "I;16B", "I;16L", "I"}


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE_BYTE = 25
"""Offset of the IHDR colour type: signature (8), chunk length (4), ``IHDR`` (4), width, height (8), bit depth (1)."""
_GRAY_ALPHA = 4


def read_png(path: str | os.PathLike, bit_depth: int | None = None) -> np.ndarray:
    """Read a PNG as ``uint8``/``uint16`` ``(H,W)`` or ``(H,W,C)`` (RGB, alpha dropped).

    ``bit_depth`` (8 or 16) is checked against the file; a mismatch raises :class:`DataError`.
    16-bit files are read as ``uint16`` (65535 stays 65535: never through a signed int16). Colour arrays are
    views with a reversed channel stride; ``np.ascontiguousarray`` them before ``torch.from_numpy``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: unreadable file ({e})") from e
    a = None
    if data.startswith(_PNG_SIGNATURE) and len(data) > _COLOUR_TYPE_BYTE:
        a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if a is None:
        a = _read_png_pil(path)
    elif a.ndim == 3:
        a = a[..., 0] if data[_COLOUR_TYPE_BYTE] == _GRAY_ALPHA else a[..., 2::-1]
    found = 16 if a.dtype == np.uint16 else 8
    if bit_depth is not None and found != bit_depth:
        raise DataError(f"{path}: wrong bit depth: expected {bit_depth}-bit, found {found}-bit")
    return a


def _read_png_pil(path: Path) -> np.ndarray:
    """Pillow's decode: the fallback for what OpenCV cannot read, raising :class:`DataError` with the reason."""
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
    except Exception as e:  # PIL raises many types for corrupt files
        raise DataError(f"{path}: unreadable PNG ({type(e).__name__}: {e})") from e
    return a


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode ``uint8`` (gray/RGB) or ``uint16`` (gray) arrays as PNG bytes (lossless).

    OpenCV's libpng with the "up" row filter and zlib's run-length strategy at ``compress_level`` (0-9): faster
    than libpng's adaptive filters with the default strategy, in slightly larger files
    (``benchmarks/test_bench_png.py`` measures both).
    """
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"cannot encode dtype {array.dtype} as PNG")
    if array.dtype == np.uint16 and array.ndim != 2:
        raise ValueError("16-bit PNGs must be single-channel (H,W)")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"PNG arrays must be (H,W) or (H,W,3), got {array.shape}")
    bgr = array if array.ndim == 2 else array[..., ::-1]
    params = [
        *(cv2.IMWRITE_PNG_COMPRESSION, compress_level),
        *(cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE),
        *(cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP),
    ]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr), params)
    if not ok:
        raise ValueError(f"PNG encoding failed for an array of shape {array.shape}")
    return buf.tobytes()


def write_png(path: str | os.PathLike, array: np.ndarray, compress_level: int = 1) -> Path:
    """Encode and write atomically (temp name, then rename)."""
    return atomic_write_bytes(path, encode_png(array, compress_level))
