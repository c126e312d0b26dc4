"""Independent references for the local engine's tests.

Nothing here imports ``ssegate.local``: the GGUF is read with the ``gguf``
package (llama.cpp's own Python reader, with its own dequantisation), and the
forward pass is written the plain way, in float64, one head at a time, with
RoPE as Meta's reference llama does it (adjacent pairs as complex numbers).
Agreement between this and the engine is what the pinned values rest on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q


class ReferenceLlama:
    """A slow, obviously-correct float64 llama forward pass (no KV cache)."""

    def __init__(self, path: str | Path) -> None:
        reader = gguf.GGUFReader(str(path))
        self.meta: dict[str, Any] = {}
        for key in (
            "llama.block_count",
            "llama.embedding_length",
            "llama.attention.head_count",
            "llama.attention.head_count_kv",
            "llama.rope.freq_base",
            "llama.attention.layer_norm_rms_epsilon",
        ):
            self.meta[key] = reader.fields[key].contents()
        self.tensors: dict[str, np.ndarray] = {}
        for t in reader.tensors:
            # gguf gives (out, in) for matrices, as the file stores them
            self.tensors[t.name] = gguf.quants.dequantize(t.data, t.tensor_type)

    def w(self, name: str) -> np.ndarray:
        return self.tensors[name].astype(np.float64)

    def logits(self, tokens: list[int]) -> np.ndarray:
        """Logits (float64) at every position of ``tokens``."""
        n_layers = int(self.meta["llama.block_count"])
        d = int(self.meta["llama.embedding_length"])
        n_h = int(self.meta["llama.attention.head_count"])
        n_kv = int(self.meta["llama.attention.head_count_kv"])
        base = float(self.meta["llama.rope.freq_base"])
        eps = float(self.meta["llama.attention.layer_norm_rms_epsilon"])
        hd = d // n_h
        t = len(tokens)

        def norm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
            return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

        freqs = base ** (-np.arange(0, hd, 2) / hd)
        rot = np.exp(1j * np.outer(np.arange(t), freqs))  # (t, hd/2)

        def rope(x: np.ndarray) -> np.ndarray:  # x: (t, heads, hd)
            c = x[..., 0::2] + 1j * x[..., 1::2]
            c = c * rot[:, None, :]
            out = np.empty_like(x)
            out[..., 0::2] = c.real
            out[..., 1::2] = c.imag
            return out

        emb = self.w("token_embd.weight")
        x = emb[tokens]
        for i in range(n_layers):
            p = f"blk.{i}."
            h = norm(x, self.w(p + "attn_norm.weight"))
            q = rope((h @ self.w(p + "attn_q.weight").T).reshape(t, n_h, hd))
            k = rope((h @ self.w(p + "attn_k.weight").T).reshape(t, n_kv, hd))
            v = (h @ self.w(p + "attn_v.weight").T).reshape(t, n_kv, hd)
            out = np.zeros((t, n_h, hd))
            for head in range(n_h):
                kv = head // (n_h // n_kv)
                for pos in range(t):
                    s = k[: pos + 1, kv] @ q[pos, head] / np.sqrt(hd)
                    a = np.exp(s - s.max())
                    a /= a.sum()
                    out[pos, head] = a @ v[: pos + 1, kv]
            x = x + out.reshape(t, d) @ self.w(p + "attn_output.weight").T
            h = norm(x, self.w(p + "ffn_norm.weight"))
            g = h @ self.w(p + "ffn_gate.weight").T
            u = h @ self.w(p + "ffn_up.weight").T
            x = x + (g / (1 + np.exp(-g)) * u) @ self.w(p + "ffn_down.weight").T
        x = norm(x, self.w("output_norm.weight"))
        head = self.w("output.weight") if "output.weight" in self.tensors else emb
        return x @ head.T


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, written out independently."""
    bs = [*range(33, 127), *range(161, 173), *range(174, 256)]
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


BYTE_CHARS = _bytes_to_unicode()
TINY_CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]


def write_tiny_llama(path: Path, *, tied: bool = False, seed: int = 0) -> Path:
    """A 2-layer llama GGUF with random weights, every tensor type the engine reads.

    Vocabulary: 3 control tokens, the 256 byte tokens, then one per merge.
    """
    rng = np.random.default_rng(seed)
    d, n_h, n_kv, ffn, n_layers, ctx = 64, 4, 2, 128, 2, 96
    hd = d // n_h
    tokens = TINY_CONTROL + [BYTE_CHARS[b] for b in range(256)]
    tokens += [m.replace(" ", "") for m in TINY_MERGES]
    types = [3] * len(TINY_CONTROL) + [1] * (len(tokens) - len(TINY_CONTROL))
    vocab = len(tokens) + 32 - len(tokens) % 32 if len(tokens) % 32 else len(tokens)
    while len(tokens) < vocab:  # pad to whole blocks with unused tokens
        tokens.append(f"[PAD{len(tokens)}]")
        types.append(4)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(n_layers)
    w.add_context_length(ctx)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_h)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(TINY_MERGES)
    w.add_bos_token_id(0)
    w.add_eos_token_id(2)

    def tensor(name: str, shape: tuple[int, ...], qtype: Q, scale: float = 0.2) -> None:
        data = (rng.standard_normal(shape) * scale).astype(np.float32)
        if qtype == Q.F32:
            w.add_tensor(name, data)
        elif qtype == Q.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    tensor("token_embd.weight", (vocab, d), Q.Q8_0, 1.0)
    for i in range(n_layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", (1 + rng.random(d) * 0.1).astype(np.float32))
        tensor(p + "attn_q.weight", (n_h * hd, d), Q.Q4_0)
        tensor(p + "attn_k.weight", (n_kv * hd, d), Q.Q4_1)
        tensor(p + "attn_v.weight", (n_kv * hd, d), Q.F16)
        tensor(p + "attn_output.weight", (d, n_h * hd), Q.Q8_0)
        w.add_tensor(p + "ffn_norm.weight", (1 + rng.random(d) * 0.1).astype(np.float32))
        tensor(p + "ffn_gate.weight", (ffn, d), Q.Q4_1)
        tensor(p + "ffn_up.weight", (ffn, d), Q.F32)
        tensor(p + "ffn_down.weight", (d, ffn), Q.Q4_0)
    w.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    if not tied:
        tensor("output.weight", (vocab, d), Q.F16, 1.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
