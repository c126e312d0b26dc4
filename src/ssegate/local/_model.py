"""The llama architecture's forward pass in numpy, float32 throughout.

Per layer: RMSNorm -> fused QKV projection -> RoPE -> grouped-query attention over
a preallocated KV cache -> output projection -> residual; RMSNorm -> fused
gate/up projection -> SwiGLU -> down projection -> residual. Then a final RMSNorm
and the output head, which is the token embedding matrix when the file has no
``output.weight`` (tied embeddings).

Why it looks the way it does (measured; ../shared/reference/local-model.md):

- Weights are dequantised once at load and stored as contiguous (in, out)
  float32 matrices, so every projection is ``x @ W``; that is about a quarter
  faster here than ``x @ W.T``. float16 storage was 20x slower (numpy's f16->f32
  cast is not vectorised) and quantised matmuls are not something numpy has.
- Q, K and V (and gate and up) are concatenated so a decode step does one GEMV
  instead of three: decode is bound by memory bandwidth and Python overhead.
- The embedding rows are read from the head's columns instead of keeping a
  second 113 MB copy of the matrix.
- Every scalar is a Python float or float32: under NEP 50 one ``np.float64``
  scalar promotes the activations to float64 and each matmul then converts the
  weights too (decode fell from ~35 to ~1 token/s that way).
- RoPE is llama.cpp's "NORM" mode, rotating adjacent pairs (2i, 2i+1):
  llama.cpp's converter permutes Q and K rows so that this equals the
  Hugging Face half-split rotation.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ._gguf import GGUFFile
from ._quant import dequantize

__all__ = ["KVCache", "LlamaConfig", "LlamaModel"]

F32 = npt.NDArray[np.float32]

# Prompts are run through the model in chunks of this many tokens: big enough
# for BLAS to work on matrices rather than vectors, small enough that the
# attention scores stay small and a cancellation waits at most one chunk.
PREFILL_CHUNK = 128
_LOAD_THREADS = 2


@dataclass(frozen=True, slots=True)
class LlamaConfig:
    """The shape of a llama-architecture model, read from its GGUF metadata."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    context_length: int
    rope_base: float
    rope_dim: int
    norm_eps: float

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> LlamaConfig:
        arch = metadata.get("general.architecture")
        if arch != "llama":
            raise ValueError(f"model architecture {arch!r} is not supported (only 'llama')")

        def get(key: str, default: Any = None) -> Any:
            value = metadata.get(f"llama.{key}", default)
            if value is None:
                raise ValueError(f"the GGUF lacks llama.{key}")
            return value

        d_model = int(get("embedding_length"))
        n_heads = int(get("attention.head_count"))
        n_kv_heads = int(get("attention.head_count_kv", n_heads))
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(f"inconsistent heads: d={d_model}, heads={n_heads}/{n_kv_heads}")
        head_dim = d_model // n_heads
        # Features of other llama GGUFs this engine does not implement: refuse them
        # rather than produce fluent-looking garbage.
        for key in ("attention.key_length", "attention.value_length"):
            if metadata.get(f"llama.{key}", head_dim) != head_dim:
                raise ValueError(f"llama.{key} != embedding_length / head_count is not supported")
        scaling = metadata.get("llama.rope.scaling.type", "none")
        if scaling != "none" or metadata.get("llama.rope.scaling.factor", 1.0) != 1.0:
            raise ValueError(f"RoPE scaling ({scaling!r}) is not supported")
        if metadata.get("llama.expert_count", 0):
            raise ValueError("mixture-of-experts llama models are not supported")
        tokens = metadata.get("tokenizer.ggml.tokens")
        return cls(
            n_layers=int(get("block_count")),
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            ffn_dim=int(get("feed_forward_length")),
            vocab_size=int(get("vocab_size", len(tokens) if tokens is not None else None)),
            context_length=int(get("context_length")),
            rope_base=float(get("rope.freq_base", 10000.0)),
            rope_dim=int(get("rope.dimension_count", head_dim)),
            norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        )


@dataclass(slots=True)
class _Layer:
    attn_norm: F32  # (d,)
    wqkv: F32  # (d, (H + 2 * KV) * hd)
    wo: F32  # (H * hd, d)
    ffn_norm: F32  # (d,)
    wgu: F32  # (d, 2 * ffn)
    wdown: F32  # (ffn, d)


class KVCache:
    """Keys and values of one conversation, for ``n_ctx`` positions, all layers."""

    def __init__(self, config: LlamaConfig, n_ctx: int) -> None:
        shape = (config.n_layers, config.n_kv_heads, n_ctx, config.head_dim)
        self.k: F32 = np.zeros(shape, dtype=np.float32)
        self.v: F32 = np.zeros(shape, dtype=np.float32)
        self.n_ctx = n_ctx
        self.length = 0  # positions filled

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def reset(self) -> None:
        """Start a new conversation (stale entries beyond ``length`` are never read)."""
        self.length = 0


class LlamaModel:
    """Float32 weights of a llama model and its forward pass."""

    def __init__(self, config: LlamaConfig, layers: list[_Layer], out_norm: F32, head: F32) -> None:
        self.config = config
        self.layers = layers
        self.out_norm = out_norm
        self.head = head  # (d, vocab): logits = x @ head; embeddings are its columns
        half = config.rope_dim // 2
        # theta_i = base^(-2i/rope_dim) (llama.cpp ggml_rope, mode NORM), in float64
        # for the table, stored float32
        inv = config.rope_base ** (-np.arange(half, dtype=np.float64) * 2.0 / config.rope_dim)
        angles = np.outer(np.arange(config.context_length, dtype=np.float64), inv)
        self._cos: F32 = np.cos(angles).astype(np.float32)
        self._sin: F32 = np.sin(angles).astype(np.float32)

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> LlamaModel:
        config = LlamaConfig.from_metadata(gguf.metadata)
        if "rope_freqs.weight" in gguf.tensors:  # Llama 3.1's per-frequency RoPE factors
            raise ValueError("RoPE frequency factors (rope_freqs.weight) are not supported")

        def weight(name: str) -> F32:
            info = gguf.tensors.get(name)
            if info is None:
                raise ValueError(f"the GGUF lacks tensor {name!r}")
            return dequantize(gguf.tensor_data(name), info.ggml_type, info.shape)

        def linear(*names: str) -> F32:
            # stored (out, in); concatenated along out, then laid out (in, out)
            parts = [weight(n) for n in names]
            for name, part in zip(names, parts, strict=True):
                if part.ndim != 2 or part.shape[1] != parts[0].shape[1]:
                    raise ValueError(f"tensor {name!r} has shape {part.shape}")
            return np.ascontiguousarray(np.concatenate(parts, axis=0).T)

        def layer(i: int) -> _Layer:
            p = f"blk.{i}."
            return _Layer(
                attn_norm=weight(p + "attn_norm.weight"),
                wqkv=linear(p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"),
                wo=linear(p + "attn_output.weight"),
                ffn_norm=weight(p + "ffn_norm.weight"),
                wgu=linear(p + "ffn_gate.weight", p + "ffn_up.weight"),
                wdown=linear(p + "ffn_down.weight"),
            )

        head_name = "output.weight" if "output.weight" in gguf.tensors else "token_embd.weight"
        # Dequantising and transposing release the GIL: two threads halve the load
        # time on an idle machine (and cost nothing on a busy one).
        with ThreadPoolExecutor(max_workers=_LOAD_THREADS) as pool:
            head_future = pool.submit(linear, head_name)
            layers = list(pool.map(layer, range(config.n_layers)))
            head = head_future.result()
        expected = (config.d_model, config.vocab_size)
        if head.shape != expected:
            raise ValueError(f"output head has shape {head.shape}, expected {expected}")
        if head_name == "output.weight":
            # untied: the embeddings are a different matrix; keep both, head layout
            emb = linear("token_embd.weight")
            model = cls(config, layers, weight("output_norm.weight"), head)
            model._embeddings = emb
            return model
        return cls(config, layers, weight("output_norm.weight"), head)

    _embeddings: F32 | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the weights."""
        total = self.head.nbytes + self.out_norm.nbytes
        if self._embeddings is not None:
            total += self._embeddings.nbytes
        for layer in self.layers:
            total += sum(
                a.nbytes
                for a in (
                    layer.attn_norm,
                    layer.wqkv,
                    layer.wo,
                    layer.ffn_norm,
                    layer.wgu,
                    layer.wdown,
                )
            )
        return total

    def new_cache(self, n_ctx: int) -> KVCache:
        if not 0 < n_ctx <= self.config.context_length:
            raise ValueError(
                f"n_ctx must be between 1 and the model's {self.config.context_length}: {n_ctx}"
            )
        return KVCache(self.config, n_ctx)

    def _rms_norm(self, x: F32, weight: F32) -> F32:
        # einsum's sum of squares is one call; np.mean costs ~10 Python-level calls
        ms = np.einsum("ij,ij->i", x, x)[:, None]
        ms *= 1.0 / x.shape[-1]
        ms += self.config.norm_eps
        out: F32 = x * (1.0 / np.sqrt(ms)) * weight
        return out

    def _rope(self, x: F32, start: int) -> F32:
        """Rotate adjacent pairs of the first ``rope_dim`` values of each head of ``x``."""
        t, heads, hd = x.shape
        rd = self.config.rope_dim
        cos = self._cos[start : start + t, None, :]
        sin = self._sin[start : start + t, None, :]
        pairs = x[:, :, :rd].reshape(t, heads, rd // 2, 2)
        x0 = pairs[..., 0]
        x1 = pairs[..., 1]
        out = np.empty_like(x)
        rot = out[:, :, :rd].reshape(t, heads, rd // 2, 2)
        rot[..., 0] = x0 * cos - x1 * sin
        rot[..., 1] = x0 * sin + x1 * cos
        if rd < hd:
            out[:, :, rd:] = x[:, :, rd:]
        return out

    def forward(self, tokens: list[int], cache: KVCache) -> F32:
        """Run ``tokens`` at the cache's next positions; the last position's logits.

        The prompt goes in chunks of ``PREFILL_CHUNK``; the caller checks room.
        """
        if not tokens:
            raise ValueError("forward() needs at least one token")
        if cache.length + len(tokens) > cache.n_ctx:
            raise ValueError(
                f"{cache.length + len(tokens)} positions do not fit the context of {cache.n_ctx}"
            )
        logits: F32 | None = None
        for i in range(0, len(tokens), PREFILL_CHUNK):
            logits = self._forward_chunk(tokens[i : i + PREFILL_CHUNK], cache)
        assert logits is not None
        return logits

    def _forward_chunk(self, tokens: list[int], cache: KVCache) -> F32:
        cfg = self.config
        t = len(tokens)
        start = cache.length
        end = start + t
        n_h, n_kv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        group = n_h // n_kv
        q_size = n_h * hd
        kv_size = n_kv * hd
        scale = 1.0 / math.sqrt(hd)  # a Python float: keeps float32 (NEP 50)

        ids = np.asarray(tokens, dtype=np.intp)
        if self._embeddings is not None:
            x: F32 = np.ascontiguousarray(self._embeddings[:, ids].T)
        else:
            x = np.ascontiguousarray(self.head[:, ids].T)  # (t, d)

        mask: F32 | None = None
        if t > 1:
            # query i (position start+i) sees keys 0..start+i
            cols = np.arange(end)
            rows = np.arange(start, end)[:, None]
            mask = np.where(cols > rows, np.float32(-np.inf), np.float32(0.0)).astype(np.float32)
            mask = mask[None, :, None, :]  # (1, t, 1, end) against (kv, t, group, end)

        for li, layer in enumerate(self.layers):
            h = self._rms_norm(x, layer.attn_norm)
            qkv = h @ layer.wqkv
            q = self._rope(qkv[:, :q_size].reshape(t, n_h, hd), start)
            k = self._rope(qkv[:, q_size : q_size + kv_size].reshape(t, n_kv, hd), start)
            v = qkv[:, q_size + kv_size :].reshape(t, n_kv, hd)
            cache.k[li, :, start:end] = k.transpose(1, 0, 2)
            cache.v[li, :, start:end] = v.transpose(1, 0, 2)
            keys = cache.k[li, :, :end]  # (kv, end, hd)
            values = cache.v[li, :, :end]

            # q heads h = kv * group + g share kv head `kv`
            qg = q.reshape(t, n_kv, group, hd).transpose(1, 0, 2, 3).reshape(n_kv, t * group, hd)
            scores = qg @ keys.transpose(0, 2, 1)  # (kv, t*group, end)
            scores *= scale
            if mask is not None:
                scores = (scores.reshape(n_kv, t, group, end) + mask).reshape(n_kv, t * group, end)
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            attn = scores @ values  # (kv, t*group, hd)
            attn = attn.reshape(n_kv, t, group, hd).transpose(1, 0, 2, 3).reshape(t, q_size)
            x += attn @ layer.wo

            h = self._rms_norm(x, layer.ffn_norm)
            gu = h @ layer.wgu
            gate = gu[:, : cfg.ffn_dim]
            up = gu[:, cfg.ffn_dim :]
            # SiLU(gate) * up = gate / (1 + exp(-gate)) * up, in place, in float32
            act = np.exp(-gate)
            act += 1.0
            np.divide(gate, act, out=act)
            act *= up
            x += act @ layer.wdown

        cache.length = end
        last = self._rms_norm(x[-1:], self.out_norm)
        logits: F32 = (last @ self.head)[0]
        return logits
