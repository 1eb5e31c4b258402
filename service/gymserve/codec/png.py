"""A minimal PNG encoder for rendered frames (8-bit grey, RGB or RGBA), from zlib alone."""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: greyscale, truecolour, truecolour with alpha
_FILTER_UP = 2  # each byte minus the one above it: flat rendered frames turn into long runs of zeros


def is_image(frame: object) -> bool:
    """Whether `encode` takes this frame: uint8, height x width (x 1, 3 or 4 channels), not empty."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.size == 0:
        return False
    return frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in _COLOR_TYPES)


def encode(frame: np.ndarray, level: int = 6) -> bytes:
    """The PNG file of a uint8 frame (https://www.w3.org/TR/png/): one IDAT chunk, filter Up on every row."""
    if not is_image(frame):
        raise ValueError(f"expected a non-empty uint8 HxW, HxWx1, HxWx3 or HxWx4 array, got {frame.dtype}{frame.shape}")
    height, width = frame.shape[:2]
    channels = 1 if frame.ndim == 2 else frame.shape[2]
    rows = np.ascontiguousarray(frame).reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = _FILTER_UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG wants
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(filtered.tobytes(), level))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
