"""A small reader for GGUF files: header, metadata, tensor table; data memory-mapped.

GGUF (ggml's model format, version 2 and 3) is little-endian::

    magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv_count x (string key, u32 value_type, value)
    tensor_count x (string name, u32 n_dims, n_dims x u64 ne, u32 ggml_type, u64 offset)
    padding to ``general.alignment`` (default 32) | tensor data

A string is a u64 byte length and UTF-8 bytes. ``ne[0]`` is the fastest-varying
dimension, so a (out, in) weight matrix is listed as ``[in, out]``. Offsets are
relative to the start of the data section.

The ``gguf`` package reads the same files but builds a Python object per array
element, which costs seconds for a 49k-word vocabulary; arrays of numbers here
become numpy views and arrays of strings a plain ``list[str]``.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

__all__ = ["GGMLType", "GGUFFile", "GGUFFormatError", "TensorInfo"]

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32

# value types of the metadata (gguf.h, enum gguf_type)
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL = range(8)
_STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = range(8, 13)

_SCALARS: Mapping[int, str] = MappingProxyType(
    {
        _UINT8: "<B",
        _INT8: "<b",
        _UINT16: "<H",
        _INT16: "<h",
        _UINT32: "<I",
        _INT32: "<i",
        _FLOAT32: "<f",
        _BOOL: "<?",
        _UINT64: "<Q",
        _INT64: "<q",
        _FLOAT64: "<d",
    }
)
_DTYPES: Mapping[int, str] = MappingProxyType(
    {
        _UINT8: "<u1",
        _INT8: "<i1",
        _UINT16: "<u2",
        _INT16: "<i2",
        _UINT32: "<u4",
        _INT32: "<i4",
        _FLOAT32: "<f4",
        _BOOL: "?",
        _UINT64: "<u8",
        _INT64: "<i8",
        _FLOAT64: "<f8",
    }
)

# A corrupt length field must not make us allocate gigabytes: no real key,
# token or template comes near these sizes.
_MAX_STRING = 64 * 1024 * 1024
_MAX_DIMS = 4


class GGUFFormatError(ValueError):
    """The file is not a GGUF file this reader understands (or is truncated)."""


class GGMLType:
    """The ggml tensor types this package can read, with their block geometry."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q8_0 = 8

    NAMES: ClassVar[Mapping[int, str]] = MappingProxyType(
        {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 8: "Q8_0"}
    )
    # type -> (elements per block, bytes per block)
    BLOCKS: ClassVar[Mapping[int, tuple[int, int]]] = MappingProxyType(
        {
            0: (1, 4),
            1: (1, 2),
            2: (32, 2 + 16),
            3: (32, 2 + 2 + 16),
            8: (32, 2 + 32),
        }
    )


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One entry of the tensor table. ``shape`` is numpy order (slowest first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return GGMLType.NAMES.get(self.ggml_type, f"type {self.ggml_type}")

    @property
    def n_elements(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n


class _Cursor:
    """Sequential little-endian reads over a buffer, with bounds checks."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise GGUFFormatError(f"truncated GGUF file: wanted {n} bytes at offset {self.pos}")
        view = memoryview(self.buf)[self.pos : end]
        self.pos = end
        return view

    def scalar(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise GGUFFormatError(f"truncated GGUF file at offset {self.pos}")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > _MAX_STRING:
            raise GGUFFormatError(f"string of {n} bytes at offset {self.pos} is implausible")
        raw = self.take(n)
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFFormatError(f"string at offset {self.pos - n} is not UTF-8") from exc

    def value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array()
        fmt = _SCALARS.get(vtype)
        if fmt is None:
            raise GGUFFormatError(f"unknown metadata value type {vtype} at offset {self.pos}")
        return self.scalar(fmt)

    def array(self) -> Any:
        etype = self.scalar("<I")
        count = self.scalar("<Q")
        if etype == _STRING:
            return [self.string() for _ in range(count)]
        if etype == _ARRAY:
            return [self.array() for _ in range(count)]
        dtype = _DTYPES.get(etype)
        if dtype is None:
            raise GGUFFormatError(f"unknown array element type {etype} at offset {self.pos}")
        itemsize = np.dtype(dtype).itemsize
        # a copy: the metadata must outlive the mapping, and it is small
        return np.frombuffer(self.take(count * itemsize), dtype=dtype).copy()


class GGUFFile:
    """An open GGUF file: ``metadata``, ``tensors`` by name, ``tensor_data(name)``.

    The tensor data stays memory-mapped; ``close()`` (or ``with``) releases it.
    Arrays returned by ``tensor_data`` are views of the mapping and must not be
    used after ``close()``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            try:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError as exc:  # an empty file cannot be mapped
                raise GGUFFormatError(f"{self.path} is empty, not a GGUF file") from exc
        try:
            self._parse()
        except BaseException:
            self._map.close()
            raise

    def _parse(self) -> None:
        cur = _Cursor(self._map)
        if bytes(cur.take(4)) != _MAGIC:
            raise GGUFFormatError(f"{self.path} is not a GGUF file (bad magic)")
        self.version: int = cur.scalar("<I")
        if self.version not in (2, 3):
            raise GGUFFormatError(f"GGUF version {self.version} is not supported (only 2 and 3)")
        n_tensors = cur.scalar("<Q")
        n_kv = cur.scalar("<Q")
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            self.metadata[key] = cur.value(cur.scalar("<I"))

        infos: list[tuple[str, tuple[int, ...], int, int]] = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.scalar("<I")
            if n_dims > _MAX_DIMS:
                raise GGUFFormatError(f"tensor {name!r} has {n_dims} dimensions")
            ne = [cur.scalar("<Q") for _ in range(n_dims)]
            infos.append((name, tuple(reversed(ne)), cur.scalar("<I"), cur.scalar("<Q")))

        alignment = int(self.metadata.get("general.alignment", _DEFAULT_ALIGNMENT))
        data_start = -(-cur.pos // alignment) * alignment
        self.tensors: dict[str, TensorInfo] = {}
        for name, shape, gtype, rel in infos:
            info = TensorInfo(name, shape, gtype, data_start + rel, 0)
            block = GGMLType.BLOCKS.get(gtype)
            if block is not None:
                per_block, block_bytes = block
                if shape[-1] % per_block:
                    raise GGUFFormatError(
                        f"tensor {name!r}: row of {shape[-1]} is not a whole number of blocks"
                    )
                nbytes = info.n_elements // per_block * block_bytes
                if info.offset + nbytes > len(self._map):
                    raise GGUFFormatError(f"tensor {name!r} runs past the end of the file")
                info = TensorInfo(name, shape, gtype, info.offset, nbytes)
            self.tensors[name] = info

    def tensor_data(self, name: str) -> npt.NDArray[np.uint8]:
        """The raw bytes of tensor ``name`` (a read-only view of the mapping)."""
        info = self.tensors.get(name)
        if info is None:
            raise KeyError(f"no tensor {name!r} in {self.path}")
        if info.ggml_type not in GGMLType.BLOCKS:
            raise GGUFFormatError(
                f"tensor {name!r} has ggml type {info.type_name}, which this reader cannot "
                f"dequantise (supported: {', '.join(GGMLType.NAMES.values())})"
            )
        return np.frombuffer(self._map, dtype=np.uint8, count=info.nbytes, offset=info.offset)

    def close(self) -> None:
        self._map.close()

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
