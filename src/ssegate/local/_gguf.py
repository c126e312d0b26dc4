"""A small reader for GGUF files: header, metadata, tensor table; data memory-mapped.

GGUF (ggml's model format, version 2 and 3) is little-endian::

    magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv_count x (string key, u32 value_type, value)
    tensor_count x (string name, u32 n_dims, n_dims x u64 ne, u32 ggml_type, u64 offset)
    padding to ``general.alignment`` (default 32) | tensor data

A string is a u64 byte length and UTF-8 bytes. ``ne[0]`` is the fastest-varying
dimension, so a (out, in) weight matrix is listed as ``[in, out]``. Offsets are
relative to the start of the data section.

A malformed file raises ``GGUFFormatError`` and nothing else, naming what is
wrong and at which offset: every length and count is checked against the bytes
left in the file before anything is read or allocated; arrays nest at most 8
deep; a tensor has 1 to 4 dimensions and a known ggml type, and its data is
aligned, inside the file and apart from every other tensor's;
``general.alignment`` is a power of two.

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

# A corrupt length field must not make us allocate gigabytes: every length is
# checked against the bytes left in the file before anything is read, and no
# real key, token or template comes near this size.
_MAX_STRING = 64 * 1024 * 1024
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_NESTING = 8  # arrays of arrays: real files use none, the format allows them
_MAX_DIM = (1 << 63) - 1  # ne is an int64 in ggml

# The fewest bytes an item can take, to check a count before reading: a
# string is its u64 length, an array its u32 type and u64 count, a metadata
# pair a key, a u32 type and a value of 1 byte at least, a tensor-table entry
# a name, u32 n_dims, one u64 dimension, u32 type and u64 offset.
_MIN_STRING = 8
_MIN_ARRAY = 12
_MIN_KV = _MIN_STRING + 4 + 1
_MIN_TENSOR = _MIN_STRING + 4 + 8 + 4 + 8

_TYPE_NAMES: Mapping[int, str] = MappingProxyType(
    {
        _UINT8: "uint8",
        _INT8: "int8",
        _UINT16: "uint16",
        _INT16: "int16",
        _UINT32: "uint32",
        _INT32: "int32",
        _FLOAT32: "float32",
        _BOOL: "bool",
        _STRING: "string",
        _ARRAY: "array",
        _UINT64: "uint64",
        _INT64: "int64",
        _FLOAT64: "float64",
    }
)

# Every tensor type of ggml (ggml.h, enum ggml_type): name, elements per block,
# bytes per block. A tensor of any of them can be sized and bounds-checked;
# ``GGMLType`` lists the few this package can dequantise. Gaps are types ggml
# removed; an id not here is refused, as llama.cpp refuses it.
_GGML_TYPES: Mapping[int, tuple[str, int, int]] = MappingProxyType(
    {
        0: ("F32", 1, 4),
        1: ("F16", 1, 2),
        2: ("Q4_0", 32, 18),
        3: ("Q4_1", 32, 20),
        6: ("Q5_0", 32, 22),
        7: ("Q5_1", 32, 24),
        8: ("Q8_0", 32, 34),
        9: ("Q8_1", 32, 40),
        10: ("Q2_K", 256, 84),
        11: ("Q3_K", 256, 110),
        12: ("Q4_K", 256, 144),
        13: ("Q5_K", 256, 176),
        14: ("Q6_K", 256, 210),
        15: ("Q8_K", 256, 292),
        16: ("IQ2_XXS", 256, 66),
        17: ("IQ2_XS", 256, 74),
        18: ("IQ3_XXS", 256, 98),
        19: ("IQ1_S", 256, 50),
        20: ("IQ4_NL", 32, 18),
        21: ("IQ3_S", 256, 110),
        22: ("IQ2_S", 256, 82),
        23: ("IQ4_XS", 256, 136),
        24: ("I8", 1, 1),
        25: ("I16", 1, 2),
        26: ("I32", 1, 4),
        27: ("I64", 1, 8),
        28: ("F64", 1, 8),
        29: ("IQ1_M", 256, 56),
        30: ("BF16", 1, 2),
        34: ("TQ1_0", 256, 54),
        35: ("TQ2_0", 256, 66),
        39: ("MXFP4", 32, 17),
        40: ("NVFP4", 64, 36),
        41: ("Q1_0", 128, 18),
    }
)


class GGUFFormatError(ValueError):
    """The file is not a GGUF file this reader understands: truncated, or malformed.

    The message says what is wrong and where (the offset in the file).
    """


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
        known = _GGML_TYPES.get(self.ggml_type)
        return known[0] if known is not None else f"type {self.ggml_type}"

    @property
    def n_elements(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n


class _Cursor:
    """Sequential little-endian reads over a buffer, every length checked first.

    Each read names what it reads (``what``) so that an error says what is
    wrong and where: ``GGUFFormatError`` is the only exception that escapes.
    """

    __slots__ = ("buf", "pos", "size")

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)

    def need(self, n: int, what: str) -> None:
        """Fail unless ``n`` bytes are left (before reading or allocating them)."""
        left = self.size - self.pos
        if n > left:
            raise GGUFFormatError(
                f"truncated GGUF file: {what} at offset {self.pos} needs {n} bytes, "
                f"the file has {left} left"
            )

    def take(self, n: int, what: str) -> bytes:
        # bytes, not a view: a view left in a traceback would keep the mapping
        # from closing when the error it belongs to is raised
        self.need(n, what)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw

    def scalar(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        value: int = self.scalar("<I", what)
        return value

    def u64(self, what: str) -> int:
        value: int = self.scalar("<Q", what)
        return value

    def string(self, what: str) -> str:
        at = self.pos
        n = self.u64(f"length of {what}")
        if n > _MAX_STRING:
            raise GGUFFormatError(
                f"{what} at offset {at} claims {n} bytes, which is implausible "
                f"(at most {_MAX_STRING})"
            )
        raw = self.take(n, f"{what} of {n} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFFormatError(
                f"{what} at offset {at + 8 + exc.start} is not UTF-8 ({exc.reason})"
            ) from exc

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            return self.array(what, depth + 1)
        fmt = _SCALARS.get(vtype)
        if fmt is None:
            raise GGUFFormatError(
                f"{what}: unknown metadata value type {vtype} at offset {self.pos - 4}"
            )
        return self.scalar(fmt, what)

    def array(self, what: str, depth: int) -> Any:
        at = self.pos
        if depth > _MAX_NESTING:
            raise GGUFFormatError(
                f"{what}: arrays nested more than {_MAX_NESTING} deep at offset {at}"
            )
        etype = self.u32(f"element type of {what}")
        count = self.u64(f"length of {what}")
        if etype == _STRING:
            least = _MIN_STRING
        elif etype == _ARRAY:
            least = _MIN_ARRAY
        elif etype in _DTYPES:
            least = np.dtype(_DTYPES[etype]).itemsize
        else:
            raise GGUFFormatError(f"{what}: unknown array element type {etype} at offset {at}")
        self.need(count * least, f"{what}, an array of {count} {_TYPE_NAMES[etype]}")
        if etype == _STRING:
            return [self.string(f"{what}[{i}]") for i in range(count)]
        if etype == _ARRAY:
            return [self.array(f"{what}[{i}]", depth + 1) for i in range(count)]
        # bytes of its own: the metadata must outlive the mapping
        return np.frombuffer(self.take(count * least, what), dtype=_DTYPES[etype]).copy()


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
        if cur.take(4, "the magic") != _MAGIC:
            raise GGUFFormatError(f"{self.path} is not a GGUF file (bad magic)")
        self.version: int = cur.u32("the version")
        if self.version not in (2, 3):
            if self.version.to_bytes(4, "little") in (b"\0\0\0\2", b"\0\0\0\3"):
                raise GGUFFormatError("big-endian GGUF files are not supported")
            raise GGUFFormatError(f"GGUF version {self.version} is not supported (only 2 and 3)")
        n_tensors = cur.u64("the tensor count")
        n_kv = cur.u64("the metadata count")
        cur.need(n_kv * _MIN_KV, f"{n_kv} metadata entries (at least {_MIN_KV} bytes each)")
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            at = cur.pos
            key = cur.string("a metadata key")
            if key in self.metadata:
                raise GGUFFormatError(f"duplicate metadata key {key!r} at offset {at}")
            self.metadata[key] = cur.value(cur.u32(f"the type of {key!r}"), repr(key))

        cur.need(
            n_tensors * _MIN_TENSOR,
            f"a table of {n_tensors} tensors (at least {_MIN_TENSOR} bytes each)",
        )
        table: list[tuple[int, str, tuple[int, ...], int, int]] = []
        names: set[str] = set()
        for _ in range(n_tensors):
            at = cur.pos
            name = cur.string("a tensor name")
            if name in names:
                raise GGUFFormatError(f"duplicate tensor {name!r} at offset {at}")
            names.add(name)
            n_dims = cur.u32(f"the rank of tensor {name!r}")
            if not 1 <= n_dims <= _MAX_DIMS:
                raise GGUFFormatError(
                    f"tensor {name!r} at offset {at} has {n_dims} dimensions "
                    f"(1 to {_MAX_DIMS} expected)"
                )
            ne = [cur.u64(f"a dimension of tensor {name!r}") for _ in range(n_dims)]
            if max(ne) > _MAX_DIM:
                raise GGUFFormatError(
                    f"tensor {name!r} at offset {at} has a dimension of {max(ne)}, "
                    "more than ggml's int64 holds"
                )
            gtype = cur.u32(f"the type of tensor {name!r}")
            rel = cur.u64(f"the offset of tensor {name!r}")
            table.append((at, name, tuple(reversed(ne)), gtype, rel))

        alignment = self._alignment()
        data_start = -(-cur.pos // alignment) * alignment
        self.tensors: dict[str, TensorInfo] = {}
        for at, name, shape, gtype, rel in table:
            self.tensors[name] = _tensor(at, name, shape, gtype, rel, data_start, alignment)
        self._check_overlaps(cur.size)

    def _alignment(self) -> int:
        value = self.metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise GGUFFormatError(f"general.alignment must be a positive integer, not {value!r}")
        if value & (value - 1):
            raise GGUFFormatError(f"general.alignment must be a power of two, not {value}")
        return value

    def _check_overlaps(self, size: int) -> None:
        end, last = 0, ""
        for info in sorted(self.tensors.values(), key=lambda t: (t.offset, t.nbytes)):
            if info.offset + info.nbytes > size:
                raise GGUFFormatError(
                    f"tensor {info.name!r} ({info.nbytes} bytes at offset {info.offset}) "
                    f"runs past the end of the file ({size} bytes)"
                )
            if info.offset < end and info.nbytes:
                raise GGUFFormatError(
                    f"tensors {last!r} and {info.name!r} overlap: {info.name!r} starts at "
                    f"offset {info.offset}, before {last!r} ends at {end}"
                )
            if info.nbytes:
                end, last = info.offset + info.nbytes, info.name

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


def _tensor(
    at: int,
    name: str,
    shape: tuple[int, ...],
    gtype: int,
    rel: int,
    data_start: int,
    alignment: int,
) -> TensorInfo:
    """A tensor-table entry (read at offset ``at``) checked and sized."""
    known = _GGML_TYPES.get(gtype)
    if known is None:
        raise GGUFFormatError(f"tensor {name!r} at offset {at} has unknown ggml type {gtype}")
    type_name, per_block, block_bytes = known
    if shape[-1] % per_block:
        raise GGUFFormatError(
            f"tensor {name!r} at offset {at}: row of {shape[-1]} is not a whole number "
            f"of {type_name} blocks ({per_block} values)"
        )
    if rel % alignment:
        raise GGUFFormatError(
            f"tensor {name!r} at offset {at}: data offset {rel} is misaligned "
            f"(general.alignment is {alignment})"
        )
    n = 1
    for dim in shape:
        n *= dim
    return TensorInfo(name, shape, gtype, data_start + rel, n // per_block * block_bytes)
