"""The GGUF reader and dequantisation, against the ``gguf`` package (llama.cpp's reader)."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssegate.local import GGUFFile, GGUFFormatError
from ssegate.local._gguf import GGMLType, TensorInfo
from ssegate.local._quant import dequantize


def test_real_model_header_metadata_and_tensor_table(model_path: str) -> None:
    reference = gguf.GGUFReader(model_path)
    with GGUFFile(model_path) as f:
        assert f.version == 3
        assert f.metadata["general.architecture"] == "llama"
        assert f.metadata["llama.block_count"] == 30
        assert f.metadata["llama.embedding_length"] == 576
        assert f.metadata["llama.attention.head_count"] == 9
        assert f.metadata["llama.attention.head_count_kv"] == 3
        assert f.metadata["tokenizer.ggml.eos_token_id"] == 2
        assert (
            f.metadata["tokenizer.ggml.tokens"]
            == reference.fields["tokenizer.ggml.tokens"].contents()
        )
        assert (
            f.metadata["tokenizer.ggml.merges"]
            == reference.fields["tokenizer.ggml.merges"].contents()
        )
        assert (
            f.metadata["tokenizer.chat_template"]
            == reference.fields["tokenizer.chat_template"].contents()
        )
        assert set(f.metadata) == set(reference.fields) - {
            "GGUF.version",
            "GGUF.tensor_count",
            "GGUF.kv_count",
        }
        assert len(f.tensors) == len(reference.tensors) == 272
        for t in reference.tensors:
            info = f.tensors[t.name]
            assert info.shape == tuple(int(n) for n in reversed(t.shape))
            assert info.ggml_type == int(t.tensor_type)
            assert info.offset == t.data_offset
            assert info.nbytes == t.n_bytes
        types = sorted({i.type_name for i in f.tensors.values()})
        assert types == ["F32", "Q4_1", "Q8_0"]


def test_real_model_dequantises_bit_exact(model_path: str) -> None:
    reference = {t.name: t for t in gguf.GGUFReader(model_path).tensors}
    with GGUFFile(model_path) as f:
        for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_norm.weight"):
            info = f.tensors[name]
            mine = dequantize(f.tensor_data(name), info.ggml_type, info.shape)
            theirs = gguf.quants.dequantize(reference[name].data, reference[name].tensor_type)
            assert mine.dtype == np.float32
            assert np.array_equal(mine, theirs.astype(np.float32))
            del mine  # views of the mapping must go before it closes


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q8_0])
def test_quantised_types_bit_exact(qtype: Q) -> None:
    data = (np.random.default_rng(int(qtype)).standard_normal((8, 96)) * 3).astype(np.float32)
    raw = gguf.quants.quantize(data, qtype)
    mine = dequantize(raw.reshape(-1), int(qtype), (8, 96))
    assert mine.dtype == np.float32
    assert np.array_equal(mine, gguf.quants.dequantize(raw, qtype).astype(np.float32))
    # and the values are what was quantised, to 4/8-bit precision
    assert np.abs(mine - data).max() < np.abs(data).max() / (6 if qtype != Q.Q8_0 else 100)


def test_float_types() -> None:
    data = np.arange(-6, 6, dtype=np.float32).reshape(3, 4) / 4
    assert np.array_equal(dequantize(data.view(np.uint8).reshape(-1), 0, (3, 4)), data)
    half = data.astype(np.float16).view(np.uint8).reshape(-1)
    out = dequantize(half, 1, (3, 4))
    assert out.dtype == np.float32
    assert np.array_equal(out, data)


def test_dequantize_refuses_wrong_sizes_and_types() -> None:
    with pytest.raises(ValueError, match="do not hold"):
        dequantize(np.zeros(35, dtype=np.uint8), 8, (32,))
    with pytest.raises(ValueError, match="cannot dequantise ggml type 14"):
        dequantize(np.zeros(210, dtype=np.uint8), 14, (256,))


def test_tiny_model_all_types(tiny_path: Path) -> None:
    reference = {t.name: t for t in gguf.GGUFReader(str(tiny_path)).tensors}
    with GGUFFile(tiny_path) as f:
        assert sorted({i.type_name for i in f.tensors.values()}) == [
            "F16",
            "F32",
            "Q4_0",
            "Q4_1",
            "Q8_0",
        ]
        for name, info in f.tensors.items():
            mine = dequantize(f.tensor_data(name), info.ggml_type, info.shape)
            ref = reference[name]
            assert np.array_equal(mine, gguf.quants.dequantize(ref.data, ref.tensor_type)), name
            del mine


# -- malformed files: GGUFFormatError, naming what is wrong and where -----------
#
# Files are written byte by byte per the spec (the module docstring of
# ssegate.local._gguf), so every field can be made wrong on purpose.

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def _header(version: int = 3, n_tensors: int = 0, n_kv: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _string(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str | bytes, vtype: int, value: bytes) -> bytes:
    return _string(key) + struct.pack("<I", vtype) + value


def _array(etype: int, items: list[bytes]) -> bytes:
    return struct.pack("<IQ", etype, len(items)) + b"".join(items)


def _tensor(name: str | bytes, ne: list[int], gtype: int, offset: int) -> bytes:
    dims = struct.pack(f"<I{len(ne)}Q", len(ne), *ne)
    return _string(name) + dims + struct.pack("<IQ", gtype, offset)


def _file(kvs: list[bytes], tensors: list[bytes], data: bytes = b"", alignment: int = 32) -> bytes:
    head = _header(n_tensors=len(tensors), n_kv=len(kvs)) + b"".join(kvs) + b"".join(tensors)
    return head + b"\0" * (-len(head) % alignment) + data


F32_DATA = struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)
Q8_DATA = struct.pack("<e", 0.25) + bytes(range(32))  # one Q8_0 block: scale, 32 int8

#: A small valid file, ending with its last tensor (no trailing padding): every
#: proper prefix of it is truncated somewhere.
VALID = _file(
    [
        _kv("general.architecture", STR, _string("llama")),
        _kv("general.alignment", U32, struct.pack("<I", 32)),
        _kv("a.words", ARR, _array(STR, [_string("x"), _string("ÿ"), _string("")])),
        _kv("a.ints", ARR, _array(I32, [struct.pack("<i", v) for v in (1, -2, 3)])),
        _kv("a.nested", ARR, _array(ARR, [_array(U8, [b"\x07"]), _array(BOOL, [])])),
        _kv("a.f64", F64, struct.pack("<d", 0.5)),
    ],
    [_tensor("a", [4], 0, 0), _tensor("b", [32], 8, 32)],
    F32_DATA + b"\0" * 16 + Q8_DATA,
)


def _open(tmp_path: Path, content: bytes) -> GGUFFile:
    path = tmp_path / "f.gguf"
    path.write_bytes(content)
    return GGUFFile(path)


def _refused(tmp_path: Path, content: bytes) -> str:
    """The message of the ``GGUFFormatError`` opening ``content`` raises."""
    with pytest.raises(GGUFFormatError) as info:
        _open(tmp_path, content).close()
    return str(info.value)


def test_the_hand_written_file_is_valid_for_us_and_for_gguf(tmp_path: Path) -> None:
    with _open(tmp_path, VALID) as f:
        assert f.metadata["general.architecture"] == "llama"
        assert f.metadata["a.words"] == ["x", "ÿ", ""]
        assert f.metadata["a.ints"].tolist() == [1, -2, 3]
        assert [a.tolist() for a in f.metadata["a.nested"]] == [[7], []]
        data_start = len(VALID) - 66
        assert f.tensors == {
            "a": TensorInfo("a", (4,), 0, data_start, 16),
            "b": TensorInfo("b", (32,), 8, data_start + 32, 34),
        }
        assert bytes(f.tensor_data("a")) == F32_DATA
        assert bytes(f.tensor_data("b")) == Q8_DATA
    reference = gguf.GGUFReader(str(tmp_path / "f.gguf"))
    assert [(t.name, t.data_offset, t.n_bytes) for t in reference.tensors] == [
        ("a", data_start, 16),
        ("b", data_start + 32, 34),
    ]


def _kv_file(*kvs: bytes) -> bytes:
    return _file(list(kvs), [])


def _tensor_file(*tensors: bytes, data: bytes = b"", kvs: tuple[bytes, ...] = ()) -> bytes:
    return _file(list(kvs), list(tensors), data)


def _nested(depth: int) -> bytes:
    value = _array(U8, [])
    for _ in range(depth - 1):
        value = _array(ARR, [value])
    return value


HUGE = 1 << 62

MALFORMED = [
    (_header(version=1), "GGUF version 1 is not supported (only 2 and 3)"),
    (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian GGUF files are not supported"),
    (
        b"GGUF\3\0",
        "truncated GGUF file: the version at offset 4 needs 4 bytes, the file has 2 left",
    ),
    (
        _header(n_kv=1)[:-3],
        "truncated GGUF file: the metadata count at offset 16 needs 8 bytes, the file has 5 left",
    ),
    (
        _header(n_kv=HUGE),
        f"truncated GGUF file: {HUGE} metadata entries (at least 13 bytes each) at offset 24 "
        f"needs {HUGE * 13} bytes, the file has 0 left",
    ),
    (
        _header(n_tensors=HUGE) + b"\0" * 40,
        f"truncated GGUF file: a table of {HUGE} tensors (at least 32 bytes each) at offset 24 "
        f"needs {HUGE * 32} bytes, the file has 40 left",
    ),
    (
        _header(n_kv=1) + _string("kk") + b"\0\0\0",
        "truncated GGUF file: the type of 'kk' at offset 34 needs 4 bytes, the file has 3 left",
    ),
    (
        _kv_file(_kv("k", 99, b"\0" * 8)),
        "'k': unknown metadata value type 99 at offset 33",
    ),
    (
        _kv_file(struct.pack("<Q", 1 << 40) + b"\0" * 8),
        "a metadata key at offset 24 claims 1099511627776 bytes, which is implausible "
        "(at most 67108864)",
    ),
    (
        _kv_file(_kv("k", STR, struct.pack("<Q", 1000) + b"abc")),
        "truncated GGUF file: 'k' of 1000 bytes at offset 45 needs 1000 bytes, "
        "the file has 19 left",
    ),
    (
        _kv_file(_kv("k", STR, _string(b"ok\xff"))),
        "'k' at offset 47 is not UTF-8 (invalid start byte)",
    ),
    (
        _kv_file(_kv(b"k\xc3", U8, b"\1")),
        "a metadata key at offset 33 is not UTF-8 (unexpected end of data)",
    ),
    (
        _kv_file(_kv("k", U8, b"\1"), _kv("k", U8, b"\2")),
        "duplicate metadata key 'k' at offset 38",
    ),
    (
        _kv_file(_kv("k", ARR, struct.pack("<IQ", 13, 1) + b"\0" * 8)),
        "'k': unknown array element type 13 at offset 37",
    ),
    (
        _kv_file(_kv("k", ARR, struct.pack("<IQ", U64, HUGE) + b"\0" * 8)),
        f"truncated GGUF file: 'k', an array of {HUGE} uint64 at offset 49 needs {HUGE * 8} "
        "bytes, the file has 15 left",
    ),
    (
        _kv_file(_kv("k", ARR, struct.pack("<IQ", STR, HUGE))),
        f"truncated GGUF file: 'k', an array of {HUGE} string at offset 49 needs {HUGE * 8} "
        "bytes, the file has 15 left",
    ),
    (
        _kv_file(_kv("k", ARR, _array(STR, [_string("a"), _string(b"\x80")]))),
        "'k'[1] at offset 66 is not UTF-8 (invalid start byte)",
    ),
    (
        _kv_file(_kv("k", ARR, _nested(9))),
        "'k'[0][0][0][0][0][0][0][0]: arrays nested more than 8 deep at offset 133",
    ),
    (
        _kv_file(_kv("k", ARR, _nested(5000))),
        "'k'[0][0][0][0][0][0][0][0]: arrays nested more than 8 deep at offset 133",
    ),
    (
        _kv_file(_kv("general.alignment", U32, struct.pack("<I", 0))),
        "general.alignment must be a positive integer, not 0",
    ),
    (
        _kv_file(_kv("general.alignment", U32, struct.pack("<I", 24))),
        "general.alignment must be a power of two, not 24",
    ),
    (
        _kv_file(_kv("general.alignment", STR, _string("32"))),
        "general.alignment must be a positive integer, not '32'",
    ),
    (
        _kv_file(_kv("general.alignment", F32, struct.pack("<f", 32.0))),
        "general.alignment must be a positive integer, not 32.0",
    ),
    (
        _kv_file(_kv("general.alignment", BOOL, b"\1")),
        "general.alignment must be a positive integer, not True",
    ),
    (
        _tensor_file(_string("t") + struct.pack("<IIQ", 0, 0, 0) + b"\0" * 8),
        "tensor 't' at offset 24 has 0 dimensions (1 to 4 expected)",
    ),
    (
        _tensor_file(_tensor("t", [1] * 5, 0, 0)),
        "tensor 't' at offset 24 has 5 dimensions (1 to 4 expected)",
    ),
    (
        _tensor_file(_tensor("t", [4, 1 << 63], 0, 0)),
        f"tensor 't' at offset 24 has a dimension of {1 << 63}, more than ggml's int64 holds",
    ),
    (
        _tensor_file(_tensor("t", [4], 99, 0), data=F32_DATA),
        "tensor 't' at offset 24 has unknown ggml type 99",
    ),
    (
        _tensor_file(_tensor("t", [32], 4, 0), data=b"\0" * 20),  # Q4_2, removed from ggml
        "tensor 't' at offset 24 has unknown ggml type 4",
    ),
    (
        _tensor_file(_tensor(b"\xfft", [4], 0, 0)),
        "a tensor name at offset 32 is not UTF-8 (invalid start byte)",
    ),
    (
        _tensor_file(_tensor("t", [4], 0, 0), _tensor("t", [4], 0, 32), data=b"\0" * 48),
        "duplicate tensor 't' at offset 57",
    ),
    (
        _tensor_file(_tensor("t", [33], 8, 0)),
        "tensor 't' at offset 24: row of 33 is not a whole number of Q8_0 blocks (32 values)",
    ),
    (
        _tensor_file(_tensor("t", [4], 0, 16), data=b"\0" * 64),
        "tensor 't' at offset 24: data offset 16 is misaligned (general.alignment is 32)",
    ),
    (
        _tensor_file(_tensor("t", [4], 0, 0), data=b"\0" * 15),
        "tensor 't' (16 bytes at offset 64) runs past the end of the file (79 bytes)",
    ),
    (
        _tensor_file(_tensor("t", [4], 0, 1 << 60), data=F32_DATA),
        f"tensor 't' (16 bytes at offset {64 + (1 << 60)}) runs past the end of the file "
        "(80 bytes)",
    ),
    (
        _tensor_file(_tensor("t", [1 << 40, 1 << 20], 0, 0), data=F32_DATA),
        f"tensor 't' ({1 << 62} bytes at offset 96) runs past the end of the file (112 bytes)",
    ),
    (
        _tensor_file(_tensor("a", [16], 0, 0), _tensor("b", [4], 0, 32), data=b"\0" * 64),
        "tensors 'a' and 'b' overlap: 'b' starts at offset 128, before 'a' ends at 160",
    ),
]


@pytest.mark.parametrize(("content", "message"), MALFORMED)
def test_malformed_files_say_what_is_wrong_and_where(
    tmp_path: Path, content: bytes, message: str
) -> None:
    assert _refused(tmp_path, content) == message


def test_arrays_nested_8_deep_are_read(tmp_path: Path) -> None:
    with _open(tmp_path, _kv_file(_kv("k", ARR, _nested(8)))) as f:
        value = f.metadata["k"]
        for _ in range(7):
            assert isinstance(value, list)
            assert len(value) == 1
            value = value[0]
        assert value.tolist() == []


def test_empty_files_and_other_formats_are_named(tmp_path: Path) -> None:
    path = tmp_path / "f.gguf"
    assert _refused(tmp_path, b"") == f"{path} is empty, not a GGUF file"
    assert _refused(tmp_path, b"GGML" + b"\0" * 20) == f"{path} is not a GGUF file (bad magic)"


def test_absurd_counts_allocate_nothing(tmp_path: Path) -> None:
    cases = [c for c, _ in MALFORMED if str(HUGE) in _refused(tmp_path, c)]
    assert len(cases) == 5
    tracemalloc.start()
    try:
        for content in cases:
            _refused(tmp_path, content)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_every_truncation_of_a_valid_file_is_refused(tmp_path: Path) -> None:
    data_start = len(VALID) - 66
    for n in range(1, len(VALID)):
        message = _refused(tmp_path, VALID[:n])
        a, b = (
            f"tensor {name} at offset {start}) runs past the end of the file ({n} bytes)"
            for name, start in [("'a' (16 bytes", data_start), ("'b' (34 bytes", data_start + 32)]
        )
        if n >= data_start + 16:
            assert message == b, n
        elif n >= data_start:
            assert message == a, n
        else:  # in the header, or in the padding after it
            assert message.startswith("truncated GGUF file: ") or message == a, (n, message)


def _read_all(path: Path) -> None:
    """Open a file and touch everything it offers; only GGUFFormatError may escape."""
    try:
        f = GGUFFile(path)
    except GGUFFormatError as exc:
        message = str(exc)
    else:
        with f:
            size = path.stat().st_size
            for name, info in f.tensors.items():
                assert info.offset + info.nbytes <= size
                if info.ggml_type in GGMLType.BLOCKS:
                    assert f.tensor_data(name).size == info.nbytes
        return
    assert message


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(VALID) - 1), st.binary(min_size=1, max_size=9)),
        min_size=1,
        max_size=4,
    ),
    cut=st.integers(0, 64),
)
def test_fuzzed_files_raise_only_format_errors(
    tmp_path: Path, edits: list[tuple[int, bytes]], cut: int
) -> None:
    content = bytearray(VALID)
    for at, patch in edits:
        content[at : at + len(patch)] = patch
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(bytes(content[: len(content) - cut] if cut < len(content) else content))
    _read_all(path)


_SCALAR_SIZES = {
    U8: 1,
    I8: 1,
    U16: 2,
    I16: 2,
    U32: 4,
    I32: 4,
    F32: 4,
    BOOL: 1,
    U64: 8,
    I64: 8,
    F64: 8,
}

values = st.deferred(
    lambda: st.one_of(
        st.tuples(st.sampled_from(sorted(_SCALAR_SIZES)), st.binary(min_size=8, max_size=8)).map(
            lambda t: struct.pack("<I", t[0]) + t[1][: _SCALAR_SIZES[t[0]]]
        ),
        st.binary(max_size=12).map(lambda b: struct.pack("<I", STR) + _string(b)),
        st.tuples(st.integers(0, 20), st.integers(0, 2**64 - 1), st.binary(max_size=40)).map(
            lambda t: struct.pack("<IIQ", ARR, t[0], t[1]) + t[2]
        ),
        st.lists(values, max_size=3).map(
            lambda vs: struct.pack("<IIQ", ARR, ARR, len(vs)) + b"".join(v[4:] for v in vs)
        ),
        st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=16)).map(
            lambda t: struct.pack("<I", t[0]) + t[1]
        ),
    )
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kvs=st.lists(st.tuples(st.binary(max_size=6), values), max_size=4),
    tensors=st.lists(
        st.tuples(
            st.binary(max_size=4),
            st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 64), max_size=5),
            st.sampled_from([0, 1, 2, 8, 14, 30, 4, 99, 2**32 - 1]),
            st.integers(0, 2**64 - 1) | st.sampled_from([0, 32, 64]),
        ),
        max_size=3,
    ),
    data=st.binary(max_size=128),
    counts=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)) | st.none(),
)
def test_generated_files_raise_only_format_errors(
    tmp_path: Path,
    kvs: list[tuple[bytes, bytes]],
    tensors: list[tuple[bytes, list[int], int, int]],
    data: bytes,
    counts: tuple[int, int] | None,
) -> None:
    n_tensors, n_kv = counts if counts is not None else (len(tensors), len(kvs))
    head = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)
    body = b"".join(_string(k) + v for k, v in kvs)
    body += b"".join(
        _string(name) + struct.pack(f"<I{len(ne)}Q", len(ne), *ne) + struct.pack("<IQ", t, off)
        for name, ne, t, off in tensors
    )
    content = head + body
    path = tmp_path / "gen.gguf"
    path.write_bytes(content + b"\0" * (-len(content) % 32) + data)
    _read_all(path)


def test_unsupported_tensor_type_is_named(tmp_path: Path) -> None:
    path = tmp_path / "q6k.gguf"
    body = _header(n_tensors=1) + _string("blk.0.w") + struct.pack("<IQIQ", 1, 256, 14, 0)
    path.write_bytes(body + b"\0" * (-len(body) % 32) + b"\0" * 210)
    with GGUFFile(path) as f:
        assert f.tensors["blk.0.w"].type_name == "Q6_K"
        with pytest.raises(GGUFFormatError, match="type Q6_K, which this reader cannot dequantise"):
            f.tensor_data("blk.0.w")
        with pytest.raises(KeyError, match="no tensor 'missing'"):
            f.tensor_data("missing")


def test_metadata_value_types(tmp_path: Path) -> None:
    path = tmp_path / "kv.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("a.u8", 7)
    w.add_int16("a.i16", -3)
    w.add_float64("a.f64", 0.5)
    w.add_bool("a.bool", True)
    w.add_uint64("a.u64", 1 << 40)
    w.add_array("a.ints", [1, 2, 3])
    w.add_array("a.strs", ["x", "ÿ", ""])
    w.add_array("a.nested", [[1, 2], [3]])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with GGUFFile(path) as f:
        m = f.metadata
        assert (m["a.u8"], m["a.i16"], m["a.f64"], m["a.bool"], m["a.u64"]) == (
            7,
            -3,
            0.5,
            True,
            1 << 40,
        )
        assert m["a.ints"].tolist() == [1, 2, 3]
        assert m["a.strs"] == ["x", "ÿ", ""]
        assert [a.tolist() for a in m["a.nested"]] == [[1, 2], [3]]
        assert f.tensors == {}
