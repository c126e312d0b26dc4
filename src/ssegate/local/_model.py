"""The llama architecture's forward pass in numpy, float32 throughout.

Per layer: RMSNorm -> fused QKV projection -> RoPE -> grouped-query attention over
a preallocated KV cache -> output projection -> residual; RMSNorm -> fused
gate/up projection -> SwiGLU -> down projection -> residual. Then a final RMSNorm
and the output head, which is the token embedding matrix when the file has no
``output.weight`` (tied embeddings).

Why it looks the way it does (measured; ../shared/reference/local-model.md and
benchmarks/local_model.py):

- Weights are dequantised once at load and stored as contiguous (in, out)
  float32 matrices, so every projection is ``x @ W``; that is about a quarter
  faster here than ``x @ W.T``. float16 storage was 20x slower (numpy's f16->f32
  cast is not vectorised) and quantised matmuls are not something numpy has.
- Decode is bound by memory bandwidth: 540 MB of weights per token, which one
  core streams at ~15 GB/s and two at ~20 GB/s. So each layer can be split in
  two shards (``shards=2``): query heads 5 + 4 (a kv head both need is in
  both), half the feed-forward units each, half the output head's columns.
  Each shard's attention output and feed-forward output is a partial sum of the
  layer's; two threads (the caller and a ``DecodeWorker``) compute one shard
  each and swap partial sums twice per layer, adding them in the same order, so
  they hold the same residual to the bit. One thread can also run both shards
  in turn (``_serial``), with the same result. ~1.25x the decode rate of one
  thread, with BLAS at one thread per caller (OpenBLAS's own threads spin-wait
  and collapse when the other core is busy).
- Q, K and V (and gate and up) are concatenated so a decode step does one GEMV
  instead of three; the RMSNorm weights are folded into the rows of those
  matrices and the attention scale into the Q columns, once at load.
- A decode step (one token) works in buffers and views allocated with the cache
  (``_Workspace``): per layer it costs numpy calls only for the arithmetic.
  Python overhead is otherwise a sizeable share of a 30 ms token.
- The embedding rows are read from the head's columns instead of keeping a
  second 113 MB copy of the matrix.
- Every scalar is a Python float or float32: under NEP 50 one ``np.float64``
  scalar promotes the activations to float64 and each matmul then converts the
  weights too (decode fell from ~35 to ~1 token/s that way).
- RoPE is llama.cpp's "NORM" mode, rotating adjacent pairs (2i, 2i+1), done as
  one complex64 multiplication of the pairs' complex view: llama.cpp's converter
  permutes Q and K rows so that this equals the Hugging Face half-split rotation.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ._gguf import GGUFFile
from ._parallel import DecodeWorker, Exchange
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
class _Shard:
    """One thread's part of a layer: some attention heads and some feed-forward units.

    The RMSNorm weights are folded into the rows of ``wqkv`` and ``wgu`` and the
    attention scale into the Q columns, so neither costs an operation per token.
    """

    wqkv: F32  # (d, (q_heads + 2 * kv_heads) * hd)
    wo: F32  # (q_heads * hd, d): rows of this shard's heads; gives a partial sum
    wgu: F32  # (d, 2 * ffn)
    wdown: F32  # (ffn, d): rows of this shard's units; gives a partial sum
    q_heads: int
    kv_heads: int
    ffn: int
    # the attention runs as one batched matmul of (kv_heads, t * group, hd): when the
    # shard's query heads do not split evenly over its kv heads, rows are padded with
    # repeats (q_index: the local query head of each row) and picked back (out_index)
    group: int
    q_index: npt.NDArray[np.intp] | None
    out_index: npt.NDArray[np.intp] | None


@dataclass(slots=True)
class _Layer:
    shards: list[_Shard]


def _shard_plan(config: LlamaConfig, n_shards: int) -> list[tuple[range, range, range]]:
    """(query heads, kv heads, feed-forward units) of each shard.

    Query heads are split as evenly as possible; a shard takes every kv head its
    query heads use, so a kv head can belong to both (SmolLM2: 9 query heads over
    3 kv heads split 5 + 4, kv head 1 computed by both) rather than leave one
    thread with twice the attention work of the other.
    """
    if not 1 <= n_shards <= 2:
        raise ValueError(f"decode threads must be 1 or 2: {n_shards!r}")
    n_h, group, ffn = config.n_heads, config.n_heads // config.n_kv_heads, config.ffn_dim
    if n_shards == 1 or n_h < 2:
        return [(range(n_h), range(config.n_kv_heads), range(ffn))]
    q_cut, f_cut = (n_h + 1) // 2, ffn // 2
    plan = []
    for q, f in ((range(q_cut), range(f_cut)), (range(q_cut, n_h), range(f_cut, ffn))):
        plan.append((q, range(q.start // group, (q.stop - 1) // group + 1), f))
    return plan


def _grouping(
    q: range, kv: range, group: int
) -> tuple[int, npt.NDArray[np.intp] | None, npt.NDArray[np.intp] | None]:
    members = [[h - q.start for h in q if h // group == j] for j in kv]
    width = max(len(m) for m in members)
    if all(len(m) == width for m in members):
        return width, None, None
    rows = [m + [m[-1]] * (width - len(m)) for m in members]
    q_index = np.array([i for row in rows for i in row], dtype=np.intp)
    out_index = np.array(
        [j * width + r for j, m in enumerate(members) for r in range(len(m))], dtype=np.intp
    )
    return width, q_index, out_index


class _Workspace:
    """One shard's decode buffers and the views into them, allocated once per cache.

    A decode step (one token) writes every intermediate into these, so it costs
    numpy calls only for the arithmetic: no slicing, reshaping or allocating.
    """

    def __init__(self, config: LlamaConfig, shard: _Shard, k: F32, v: F32) -> None:
        hd, rd = config.head_dim, config.rope_dim
        n_q, n_kv, group = shard.q_heads, shard.kv_heads, shard.group
        self.qkv: F32 = np.empty((1, (n_q + 2 * n_kv) * hd), dtype=np.float32)
        qk = self.qkv[0, : (n_q + n_kv) * hd].reshape(n_q + n_kv, hd)
        self.rotate = qk[:, :rd].view(np.complex64)  # (q + kv heads, rd/2)
        self.k_new = qk[n_q:]
        self.v_new = self.qkv[0, (n_q + n_kv) * hd :].reshape(n_kv, hd)
        self.q_heads = qk[:n_q]
        self.q_rows: F32 = (
            qk[:n_q].reshape(n_kv, group, hd)
            if shard.q_index is None
            else np.empty((n_kv, group, hd), dtype=np.float32)
        )
        self.q_flat = self.q_rows.reshape(n_kv * group, hd)
        self.attn: F32 = np.empty((n_kv, group, hd), dtype=np.float32)
        self.attn_rows = self.attn.reshape(n_kv * group, hd)
        self.heads: F32 = (
            self.attn.reshape(1, n_q * hd)
            if shard.out_index is None
            else np.empty((1, n_q * hd), dtype=np.float32)
        )
        self.heads_rows = self.heads.reshape(n_q, hd)
        self.gu: F32 = np.empty((1, 2 * shard.ffn), dtype=np.float32)
        self.gate = self.gu[:, : shard.ffn]
        self.up = self.gu[:, shard.ffn :]
        self.act: F32 = np.empty((1, shard.ffn), dtype=np.float32)
        self.keys = list(k)  # per layer: (kv heads, n_ctx, hd) views
        self.values = list(v)


class KVCache:
    """Keys and values of one conversation, for ``n_ctx`` positions, all layers.

    One (layers, kv heads, n_ctx, head_dim) pair of arrays per shard of the model.
    ``worker`` is the thread that runs the second shard while this conversation
    decodes, lent by the engine (``None``: the calling thread runs every shard).
    """

    def __init__(self, config: LlamaConfig, n_ctx: int, kv_heads: tuple[int, ...] = ()) -> None:
        self.k: list[F32] = []
        self.v: list[F32] = []
        for heads in kv_heads or (config.n_kv_heads,):
            shape = (config.n_layers, heads, n_ctx, config.head_dim)
            self.k.append(np.zeros(shape, dtype=np.float32))
            self.v.append(np.zeros(shape, dtype=np.float32))
        self.n_ctx = n_ctx
        self.length = 0  # positions filled
        self.worker: DecodeWorker | None = None
        self.workspaces: list[_Workspace] = []  # per shard, set by LlamaModel.new_cache

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.k, *self.v))

    def reset(self) -> None:
        """Start a new conversation (stale entries beyond ``length`` are never read)."""
        self.length = 0


class LlamaModel:
    """Float32 weights of a llama model and its forward pass.

    With ``shards=2`` every layer is split in two halves that two threads run at
    once (``KVCache.worker``); one thread can also run both halves in turn, with
    the same result to the bit.
    """

    def __init__(
        self,
        config: LlamaConfig,
        layers: list[_Layer],
        out_norm: F32,
        head_parts: list[F32],
        embeddings: F32 | None = None,
    ) -> None:
        self.config = config
        self.layers = layers
        self.out_norm = out_norm
        # logits = x @ concat(head_parts, axis=1); without ``embeddings`` (tied), the
        # embeddings are the head's columns
        self.head_parts = head_parts
        self._embeddings = embeddings  # (d, vocab), when untied
        self.shards = len(layers[0].shards) if layers else 1
        half = config.rope_dim // 2
        # theta_i = base^(-2i/rope_dim) (llama.cpp ggml_rope, mode NORM), in float64
        # for the table, stored as complex64 (cos + i sin): rotating the adjacent
        # pairs (x0, x1) of a head is one complex multiplication of its complex view
        inv = config.rope_base ** (-np.arange(half, dtype=np.float64) * 2.0 / config.rope_dim)
        angles = np.outer(np.arange(config.context_length, dtype=np.float64), inv)
        self._rot: npt.NDArray[np.complex64] = (np.cos(angles) + 1j * np.sin(angles)).astype(
            np.complex64
        )

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, *, shards: int = 1) -> LlamaModel:
        config = LlamaConfig.from_metadata(gguf.metadata)
        if "rope_freqs.weight" in gguf.tensors:  # Llama 3.1's per-frequency RoPE factors
            raise ValueError("RoPE frequency factors (rope_freqs.weight) are not supported")
        plan = _shard_plan(config, shards)
        hd, d = config.head_dim, config.d_model
        scale = 1.0 / math.sqrt(hd)  # a Python float: keeps float32 (NEP 50)

        def weight(name: str, shape: tuple[int, ...]) -> F32:
            info = gguf.tensors.get(name)
            if info is None:
                raise ValueError(f"the GGUF lacks tensor {name!r}")
            array = dequantize(gguf.tensor_data(name), info.ggml_type, info.shape)
            if array.shape != shape:  # matrices are (out, in)
                raise ValueError(f"tensor {name!r} has shape {array.shape}, expected {shape}")
            return array

        def t(*parts: F32) -> F32:
            """Row blocks of (out, in) matrices, concatenated, laid out (in, out)."""
            return np.ascontiguousarray(np.concatenate(parts, axis=0).T)

        def layer(i: int) -> _Layer:
            p = f"blk.{i}."
            n_q, n_kv, ffn = config.n_heads * hd, config.n_kv_heads * hd, config.ffn_dim
            attn_norm = weight(p + "attn_norm.weight", (d,))
            ffn_norm = weight(p + "ffn_norm.weight", (d,))
            wq = weight(p + "attn_q.weight", (n_q, d)) * attn_norm
            wq *= scale
            wk = weight(p + "attn_k.weight", (n_kv, d)) * attn_norm
            wv = weight(p + "attn_v.weight", (n_kv, d)) * attn_norm
            wo = weight(p + "attn_output.weight", (d, n_q))
            wg = weight(p + "ffn_gate.weight", (ffn, d)) * ffn_norm
            wu = weight(p + "ffn_up.weight", (ffn, d)) * ffn_norm
            wd = weight(p + "ffn_down.weight", (d, ffn))
            parts = []
            for q, kv, f in plan:
                qs, kvs = slice(q.start * hd, q.stop * hd), slice(kv.start * hd, kv.stop * hd)
                fs = slice(f.start, f.stop)
                width, q_index, out_index = _grouping(q, kv, config.n_heads // config.n_kv_heads)
                parts.append(
                    _Shard(
                        wqkv=t(wq[qs], wk[kvs], wv[kvs]),
                        wo=np.ascontiguousarray(wo[:, qs].T),
                        wgu=t(wg[fs], wu[fs]),
                        wdown=np.ascontiguousarray(wd[:, fs].T),
                        q_heads=len(q),
                        kv_heads=len(kv),
                        ffn=len(f),
                        group=width,
                        q_index=q_index,
                        out_index=out_index,
                    )
                )
            return _Layer(parts)

        vocab = config.vocab_size
        head_name = "output.weight" if "output.weight" in gguf.tensors else "token_embd.weight"
        # Dequantising and transposing release the GIL: two threads halve the load
        # time on an idle machine (and cost nothing on a busy one).
        with ThreadPoolExecutor(max_workers=_LOAD_THREADS) as pool:
            head_future = pool.submit(lambda: t(weight(head_name, (vocab, d))))
            layers = list(pool.map(layer, range(config.n_layers)))
            head = head_future.result()
        head_parts = [head]
        if len(plan) > 1:
            cut = vocab // 2
            head_parts = [np.ascontiguousarray(head[:, :cut]), np.ascontiguousarray(head[:, cut:])]
            del head
        embeddings = None
        if head_name == "output.weight":
            # untied: the embeddings are a different matrix; keep both, head layout
            embeddings = t(weight("token_embd.weight", (vocab, d)))
        return cls(config, layers, weight("output_norm.weight", (d,)), head_parts, embeddings)

    @property
    def nbytes(self) -> int:
        """Bytes held by the weights."""
        total = self.out_norm.nbytes + sum(part.nbytes for part in self.head_parts)
        if self._embeddings is not None:
            total += self._embeddings.nbytes
        for layer in self.layers:
            for s in layer.shards:
                total += s.wqkv.nbytes + s.wo.nbytes + s.wgu.nbytes + s.wdown.nbytes
        return total

    def new_cache(self, n_ctx: int) -> KVCache:
        if not 0 < n_ctx <= self.config.context_length:
            raise ValueError(
                f"n_ctx must be between 1 and the model's {self.config.context_length}: {n_ctx}"
            )
        shards = self.layers[0].shards if self.layers else []
        cache = KVCache(self.config, n_ctx, tuple(s.kv_heads for s in shards))
        cache.workspaces = [
            _Workspace(self.config, shard, cache.k[s], cache.v[s]) for s, shard in enumerate(shards)
        ]
        return cache

    # -- the forward pass --------------------------------------------------------

    def _normed(self, x: F32) -> F32:
        """``x`` over its root mean square (the norm's weights are in the next matrix)."""
        cfg = self.config
        if x.shape[0] == 1:  # decode: one dot product and Python floats
            ms = float(np.vdot(x, x))
            out: F32 = x * (1.0 / math.sqrt(ms / cfg.d_model + cfg.norm_eps))
            return out
        ms_rows = np.einsum("ij,ij->i", x, x)[:, None]
        ms_rows *= 1.0 / cfg.d_model
        ms_rows += cfg.norm_eps
        np.sqrt(ms_rows, out=ms_rows)
        out = x / ms_rows
        return out

    def _embed(self, tokens: list[int]) -> F32:
        ids = np.asarray(tokens, dtype=np.intp)
        if self._embeddings is not None:
            return np.ascontiguousarray(self._embeddings[:, ids].T)
        if len(self.head_parts) == 1:
            return np.ascontiguousarray(self.head_parts[0][:, ids].T)  # (t, d)
        if len(tokens) == 1:
            cut = self.head_parts[0].shape[1]
            token = tokens[0]
            index, column = (0, token) if token < cut else (1, token - cut)
            # a copy: the residual is updated in place
            row: F32 = self.head_parts[index][:, column][None, :].copy()
            return row
        x = np.empty((len(tokens), self.config.d_model), dtype=np.float32)
        offset = 0
        for part in self.head_parts:
            width = part.shape[1]
            rows = np.flatnonzero((ids >= offset) & (ids < offset + width))
            x[rows] = part[:, ids[rows] - offset].T
            offset += width
        return x

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
        t = len(tokens)
        start = cache.length
        end = start + t
        x = self._embed(tokens)
        mask: F32 | None = None
        if t > 1:
            # query i (position start+i) sees keys 0..start+i
            cols = np.arange(end)
            rows = np.arange(start, end)[:, None]
            mask = np.where(cols > rows, np.float32(-np.inf), np.float32(0.0)).astype(np.float32)
            mask = mask[None, :, None, :]  # (1, t, 1, end) against (kv, t, group, end)

        both = None
        if cache.worker is not None and self.shards > 1:
            x_worker = x.copy()
            both = cache.worker.try_run(
                lambda ex: self._shard_pass(1, x_worker, start, cache, mask, ex),
                lambda ex: self._shard_pass(0, x, start, cache, mask, ex),
            )
        logits = self._serial(x, start, cache, mask) if both is None else np.concatenate(both)
        cache.length = end
        return logits

    def _serial(self, x: F32, start: int, cache: KVCache, mask: F32 | None) -> F32:
        """Every shard in this thread, the partial sums added in shard order."""
        for li, layer in enumerate(self.layers):
            h = self._normed(x)
            parts = [
                self._attention(s, shard, li, h, start, cache, mask)
                for s, shard in enumerate(layer.shards)
            ]
            for part in parts:
                x += part
            h = self._normed(x)
            parts = [
                self._ffn(shard, h, cache.workspaces[s] if h.shape[0] == 1 else None)
                for s, shard in enumerate(layer.shards)
            ]
            for part in parts:
                x += part
        last = self._normed(x[-1:])
        last *= self.out_norm
        if len(self.head_parts) == 1:
            logits: F32 = (last @ self.head_parts[0])[0]
            return logits
        return np.concatenate([(last @ part)[0] for part in self.head_parts])

    def _shard_pass(
        self, s: int, x: F32, start: int, cache: KVCache, mask: F32 | None, ex: Exchange
    ) -> F32:
        """Shard ``s`` of every layer, in step with the thread running the other shard.

        Both threads add the two partial sums in shard order to their own copy of
        the residual, so the copies stay equal to the bit (and equal to ``_serial``).
        """
        ws = cache.workspaces[s] if x.shape[0] == 1 else None
        for li, layer in enumerate(self.layers):
            shard = layer.shards[s]
            own = self._attention(s, shard, li, self._normed(x), start, cache, mask)
            other = ex.swap(own)
            x += own if s == 0 else other
            x += other if s == 0 else own
            own = self._ffn(shard, self._normed(x), ws)
            other = ex.swap(own)
            x += own if s == 0 else other
            x += other if s == 0 else own
        last = self._normed(x[-1:])
        last *= self.out_norm
        logits: F32 = (last @ self.head_parts[s])[0]
        return logits

    def _attention(
        self,
        s: int,
        shard: _Shard,
        li: int,
        h: F32,
        start: int,
        cache: KVCache,
        mask: F32 | None,
    ) -> F32:
        """This shard's heads: QKV, RoPE, the cache, attention; its partial output."""
        t = h.shape[0]
        if t == 1:
            return self._attention_one(shard, li, h, start, cache.workspaces[s])
        end = start + t
        hd, rd = self.config.head_dim, self.config.rope_dim
        n_q, n_kv, group = shard.q_heads, shard.kv_heads, shard.group
        qkv = h @ shard.wqkv
        qk = qkv[:, : (n_q + n_kv) * hd].reshape(t, n_q + n_kv, hd)
        rotated = qk[..., :rd].view(np.complex64)
        rotated *= self._rot[start:end, None, :]
        keys = cache.k[s][li]  # (kv, n_ctx, hd)
        values = cache.v[s][li]
        keys[:, start:end] = qk[:, n_q:].transpose(1, 0, 2)
        values[:, start:end] = qkv[:, (n_q + n_kv) * hd :].reshape(t, n_kv, hd).transpose(1, 0, 2)

        q = qk[:, :n_q]
        if shard.q_index is not None:
            q = q[:, shard.q_index]
        if t == 1:
            qg = q.reshape(n_kv, group, hd)
        else:
            qg = q.reshape(t, n_kv, group, hd).transpose(1, 0, 2, 3).reshape(n_kv, t * group, hd)
        scores = qg @ keys[:, :end].transpose(0, 2, 1)  # (kv, t*group, end)
        if mask is not None:
            scores = (scores.reshape(n_kv, t, group, end) + mask).reshape(n_kv, t * group, end)
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        attn = scores @ values[:, :end]  # (kv, t*group, hd)
        if t == 1:
            attn = attn.reshape(1, n_kv * group, hd)
        else:
            attn = attn.reshape(n_kv, t, group, hd).transpose(1, 0, 2, 3).reshape(t, -1, hd)
        if shard.out_index is not None:
            attn = attn[:, shard.out_index]
        out: F32 = attn.reshape(t, n_q * hd) @ shard.wo
        return out

    def _attention_one(self, shard: _Shard, li: int, h: F32, pos: int, ws: _Workspace) -> F32:
        """``_attention`` for one token, in the workspace's buffers."""
        np.matmul(h, shard.wqkv, out=ws.qkv)
        ws.rotate *= self._rot[pos]
        keys = ws.keys[li]
        values = ws.values[li]
        keys[:, pos] = ws.k_new
        values[:, pos] = ws.v_new
        if shard.q_index is not None:
            np.take(ws.q_heads, shard.q_index, axis=0, out=ws.q_flat)
        end = pos + 1
        scores = ws.q_rows @ keys[:, :end].transpose(0, 2, 1)  # (kv, group, end)
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        np.matmul(scores, values[:, :end], out=ws.attn)
        ws.attn /= scores.sum(axis=-1, keepdims=True)
        if shard.out_index is not None:
            np.take(ws.attn_rows, shard.out_index, axis=0, out=ws.heads_rows)
        out: F32 = ws.heads @ shard.wo
        return out

    @staticmethod
    def _ffn(shard: _Shard, h: F32, ws: _Workspace | None = None) -> F32:
        """SwiGLU over this shard's units; its partial output."""
        if ws is not None:  # one token, in the workspace's buffers
            np.matmul(h, shard.wgu, out=ws.gu)
            act = ws.act
            np.negative(ws.gate, out=act)
            np.exp(act, out=act)
            act += 1.0
            np.divide(ws.gate, act, out=act)
            act *= ws.up
            partial: F32 = act @ shard.wdown
            return partial
        gu = h @ shard.wgu
        gate = gu[:, : shard.ffn]
        # SiLU(gate) * up = gate / (1 + exp(-gate)) * up, in place, in float32
        act = np.negative(gate)
        np.exp(act, out=act)
        act += 1.0
        np.divide(gate, act, out=act)
        act *= gu[:, shard.ffn :]
        out: F32 = act @ shard.wdown
        return out
