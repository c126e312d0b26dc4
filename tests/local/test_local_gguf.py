"""The GGUF reader and dequantisation, against the ``gguf`` package (llama.cpp's reader)."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from ssegate.local import GGUFFile, GGUFFormatError
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


def _header(version: int = 3, n_tensors: int = 0, n_kv: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"GGML" + b"\0" * 20, "bad magic"),
        (_header(version=1), "version 1 is not supported"),
        (_header(n_kv=1)[:-3], "truncated"),
        (_header(n_kv=1) + _string("k"), "truncated"),
        (_header(n_kv=1) + _string("k") + struct.pack("<I", 99), "unknown metadata value type 99"),
        (_header(n_kv=1) + struct.pack("<Q", 1 << 40), "implausible"),
        (
            _header(n_tensors=1) + _string("t") + struct.pack("<I", 7),
            "has 7 dimensions",
        ),
        (
            _header(n_tensors=1) + _string("t") + struct.pack("<IQIQ", 1, 32, 8, 0),
            "runs past the end",
        ),
        (
            _header(n_tensors=1) + _string("t") + struct.pack("<IQIQ", 1, 33, 8, 0),
            "not a whole number of blocks",
        ),
    ],
)
def test_malformed_files_raise_format_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFFormatError, match=message):
        GGUFFile(path)


def test_unsupported_tensor_type_is_named(tmp_path: Path) -> None:
    path = tmp_path / "q6k.gguf"
    body = _header(n_tensors=1) + _string("blk.0.w") + struct.pack("<IQIQ", 1, 256, 14, 0)
    path.write_bytes(body + b"\0" * (-len(body) % 32) + b"\0" * 210)
    with GGUFFile(path) as f:
        assert f.tensors["blk.0.w"].type_name == "type 14"
        with pytest.raises(GGUFFormatError, match="type 14, which this reader cannot dequantise"):
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
