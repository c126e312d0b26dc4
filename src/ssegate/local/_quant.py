"""Dequantisation of ggml tensor types to float32, vectorised over blocks.

Block layouts (ggml-common.h); every block covers 32 consecutive values of a row:

- ``Q4_0``: f16 ``d``, 16 bytes of nibbles; value = (nibble - 8) * d
- ``Q4_1``: f16 ``d``, f16 ``m``, 16 bytes of nibbles; value = nibble * d + m
- ``Q8_0``: f16 ``d``, 32 int8 ``q``; value = q * d

In the 4-bit types the low nibbles of the 16 bytes are values 0..15 of the block
and the high nibbles values 16..31 (not interleaved).

Everything stays float32: a float64 intermediate here would silently double the
weights' memory and, worse, promote every later matmul to float64.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ._gguf import GGMLType

__all__ = ["dequantize"]

F32 = npt.NDArray[np.float32]
_BLOCK = 32


def _f16_column(blocks: npt.NDArray[np.uint8], start: int) -> F32:
    """The f16 stored at byte ``start`` of every block, as an (n_blocks, 1) float32 column."""
    raw = np.ascontiguousarray(blocks[:, start : start + 2])
    return raw.view("<f2").astype(np.float32)


def _nibbles(qs: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """(n_blocks, 16) packed bytes -> (n_blocks, 32) values, low nibbles first."""
    out = np.empty((qs.shape[0], _BLOCK), dtype=np.uint8)
    np.bitwise_and(qs, 0x0F, out=out[:, :16])
    np.right_shift(qs, 4, out=out[:, 16:])
    return out


def dequantize(raw: npt.NDArray[np.uint8], ggml_type: int, shape: tuple[int, ...]) -> F32:
    """The float32 values of a tensor stored as ``raw`` bytes of ``ggml_type``."""
    n = 1
    for dim in shape:
        n *= dim
    if ggml_type == GGMLType.F32:
        return raw.view("<f4")[:n].astype(np.float32).reshape(shape)
    if ggml_type == GGMLType.F16:
        return raw.view("<f2")[:n].astype(np.float32).reshape(shape)
    geometry = GGMLType.BLOCKS.get(ggml_type)
    if geometry is None:
        raise ValueError(f"cannot dequantise ggml type {ggml_type}")
    per_block, block_bytes = geometry
    if n % per_block or raw.size != n // per_block * block_bytes:
        raise ValueError(f"{raw.size} bytes of {GGMLType.NAMES[ggml_type]} do not hold {n} values")
    blocks = raw.reshape(-1, block_bytes)
    d = _f16_column(blocks, 0)
    if ggml_type == GGMLType.Q8_0:
        values = blocks[:, 2:].view(np.int8).astype(np.float32)
        values *= d
    elif ggml_type == GGMLType.Q4_0:
        values = _nibbles(blocks[:, 2:]).astype(np.float32)
        values -= np.float32(8)
        values *= d
    else:  # Q4_1
        m = _f16_column(blocks, 2)
        values = _nibbles(blocks[:, 4:]).astype(np.float32)
        values *= d
        values += m
    return values.reshape(shape)
