"""Packed float32 vectors on the wire: little-endian, row-major, N*D*4 bytes."""

from __future__ import annotations

import numpy as np

_F32_LE = np.dtype("<f4")


class VectorShapeError(ValueError):
    """Bytes whose length does not match the declared shape."""


def pack(vectors: np.ndarray) -> bytes:
    return np.ascontiguousarray(vectors, dtype=_F32_LE).tobytes()


def unpack(data: bytes, rows: int, dimensions: int) -> np.ndarray:
    """(rows, dimensions) float32 from `data`; raises `VectorShapeError` on a size mismatch."""
    expected = rows * dimensions * 4
    if len(data) != expected:
        raise VectorShapeError(f"expected {rows}x{dimensions} float32 ({expected} bytes), got {len(data)} bytes")
    if rows == 0:
        return np.zeros((0, dimensions), dtype=np.float32)
    return np.frombuffer(data, dtype=_F32_LE).reshape(rows, dimensions).astype(np.float32)
