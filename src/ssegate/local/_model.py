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
- One forward pass runs several conversations at once (``forward_batch``): the
  rows of every segment (a decode step's one token, a chunk of a prompt) go
  through each weight matrix together, so the weights are read once for all of
  them; attention is per segment, over its own cache up to its own length.
- Every matrix is stored in column blocks of 64, (out / 64, in, 64), and
  multiplied as one stacked ``np.matmul``: for the handful of rows a batched
  decode step has, OpenBLAS then takes its small-matrix path, which reads the
  weights once with no packing; on whole (in, out) matrices its GEMM packed
  them first and 8 rows cost 3-6x one row instead of ~1x (measured here,
  SkylakeX kernels).
- Greedy answers do not depend on the batch: every matmul with a weight matrix
  takes a tile of exactly ``TILE`` rows (the pass is padded), since BLAS picks
  its kernel by shape (matrix-vector for one row, small-matrix up to ~1e6
  multiply-adds, packed GEMM beyond) and each rounds differently. With one
  shape, a row gets the same bits at any place in the tile and beside any other
  rows (measured on OpenBLAS's SkylakeX and Haswell kernels; the determinism
  tests hold it). Tiles of 2 to 16 rows gave the same bits on SkylakeX but not
  on Haswell (there only 2 and 3 rows agree), so no other count is trusted. A
  lone answer thus pays for a tile of ``TILE`` rows (a fifth more per token than
  2 rows on SkylakeX); and attention has one arithmetic for prompts and
  answers, so a position's keys and values do not depend on how its prompt was
  chunked (the prefill budget, prefix reuse): each row's scores are its own
  product with the keys up to it (the kernel rounds them by their count), and
  so are its product with the values and its sum; the rest (maximum,
  exponential, division) runs for many rows at once, padded where that leaves
  every row's bits as they are alone: a prompt chunk's rows (``_attend_rows``),
  the answers' tokens of a pass (``_attend_singles``). A near-tie then cannot
  flip with the batch.
- A pass works in buffers allocated once per pass (``_Rows``): per layer it
  costs numpy calls only for the arithmetic. Python overhead is
  otherwise a sizeable share of a 30 ms token.
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

import itertools
import math
import mmap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ._gguf import GGUFFile
from ._parallel import DecodeWorker, Exchange
from ._quant import dequantize

__all__ = ["KVCache", "LlamaConfig", "LlamaModel", "Segment", "common_prefix"]

F32 = npt.NDArray[np.float32]

# Prompts are run through the model in chunks of this many tokens: big enough
# for BLAS to work on matrices rather than vectors, small enough that the
# attention scores stay small and a cancellation waits at most one chunk.
PREFILL_CHUNK = 128
# Weight matrices are stored in column blocks of this many columns (see the doc).
BLOCK = 64
# Rows go through every weight matrix in tiles of exactly this many (the pass is
# padded): BLAS picks its kernel by the matrix shapes (OpenBLAS: matrix-vector
# for one row, its small-matrix kernel up to ~1e6 multiply-adds, packed GEMM
# beyond; on some CPUs, other row counts within the small-matrix kernel), and
# each rounds differently. One shape computes a row alike wherever it sits in
# the tile (8 rows of the widest matrix, 1536 inputs by 64, stay within the
# small-matrix kernel), so a row's result does not depend on how many rows
# share the pass: a sequence decodes to the same tokens alone or in any batch.
TILE = 8
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

    # every matrix is (in, out) in column blocks (``_blocked``): (out / b, in, b)
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


def _zeros(shape: tuple[int, ...]) -> F32:
    """Zeroed float32 memory that the OS commits page by page, as positions are written.

    An anonymous private mapping, so a slot's KV cache at a 2048-token context
    costs resident memory only for the positions its conversations reach (numpy's
    ``zeros`` may reuse freed heap memory, which it must then clear: all of it).
    """
    count = math.prod(shape)
    if not hasattr(mmap, "MAP_PRIVATE"):  # not POSIX
        return np.zeros(shape, dtype=np.float32)
    buffer = mmap.mmap(-1, max(count * 4, 1), flags=mmap.MAP_PRIVATE)
    return np.frombuffer(buffer, dtype=np.float32, count=count).reshape(shape)


class KVCache:
    """Keys and values of one conversation, for ``n_ctx`` positions, all layers.

    One (layers, kv heads, n_ctx, head_dim) pair of arrays per shard of the model,
    in memory committed as it is written (``_zeros``). ``worker`` is the thread
    that runs the second shard while this conversation decodes alone
    (``LlamaModel.forward``), lent by the engine (``None``: the calling thread
    runs every shard).
    """

    def __init__(self, config: LlamaConfig, n_ctx: int, kv_heads: tuple[int, ...] = ()) -> None:
        self.k: list[F32] = []
        self.v: list[F32] = []
        for heads in kv_heads or (config.n_kv_heads,):
            shape = (config.n_layers, heads, n_ctx, config.head_dim)
            self.k.append(_zeros(shape))
            self.v.append(_zeros(shape))
        self.n_ctx = n_ctx
        self.length = 0  # positions filled
        self.worker: DecodeWorker | None = None
        # the ids whose keys and values the first positions hold, recorded when an
        # answer gives the cache back: a later prompt that begins the same way
        # starts from there (the system prompt, an earlier turn of the chat)
        self.tokens: list[int] = []

    @property
    def nbytes(self) -> int:
        """Bytes reserved (resident only once written)."""
        return sum(a.nbytes for a in (*self.k, *self.v))

    @property
    def room(self) -> int:
        """Positions still free."""
        return self.n_ctx - self.length

    def reset(self) -> None:
        """Start a new conversation (stale entries beyond ``length`` are never read)."""
        self.length = 0
        self.tokens = []

    def copy_prefix(self, source: KVCache, n: int) -> None:
        """Take the keys and values of ``source``'s first ``n`` positions; hold ``n``."""
        for mine, theirs in ((self.k, source.k), (self.v, source.v)):
            for dst, src in zip(mine, theirs, strict=True):
                dst[:, :, :n] = src[:, :, :n]
        self.length = n


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(slots=True)
class Segment:
    """Tokens of one conversation to run at its cache's next positions.

    One forward pass (``LlamaModel.forward_batch``) runs several segments, each
    over its own cache: a decode step is a segment of one token, a chunk of a
    prompt is a longer one. ``logits``: whether the logits after its last token
    are wanted (not for a prompt's inner chunks).
    """

    tokens: Sequence[int]
    cache: KVCache
    logits: bool = True


# a row that attends on its own: (its row in the pass, its position, the keys and
# values of its layer and shard)
_Single = tuple[int, int, F32, F32]


class _Rows:
    """One shard's buffers for the rows of one forward pass, and views into them.

    Every layer writes its intermediates into these (QKV, the attention heads,
    gate/up, the activation), so a step costs numpy calls only for arithmetic.
    """

    def __init__(self, config: LlamaConfig, shard: _Shard, spans: list[tuple[int, int, int]]):
        hd, rd = config.head_dim, config.rope_dim
        n_q, n_kv = shard.q_heads, shard.kv_heads
        rows = _tiled(sum(t for _, t, _ in spans))
        self.qkv: F32 = np.empty((rows, (n_q + 2 * n_kv) * hd), dtype=np.float32)
        self.qk = self.qkv[:, : (n_q + n_kv) * hd].reshape(rows, n_q + n_kv, hd)
        self.rotate = self.qk[..., :rd].view(np.complex64)  # (rows, q + kv heads, rd/2)
        # zeros: a row no segment writes (the padding row) stays finite
        self.heads: F32 = np.zeros((rows, n_q * hd), dtype=np.float32)
        self.gu: F32 = np.empty((rows, 2 * shard.ffn), dtype=np.float32)
        self.gate = self.gu[:, : shard.ffn]
        self.up = self.gu[:, shard.ffn :]
        self.act: F32 = np.empty((rows, shard.ffn), dtype=np.float32)
        self.qkv_out = _tile_outs(self.qkv, shard.wqkv)
        self.gu_out = _tile_outs(self.gu, shard.wgu)


class _Plan:
    """Where each segment of one forward pass is: its rows, positions, buffers."""

    def __init__(self, model: LlamaModel, segments: Sequence[Segment]) -> None:
        self.segments = segments
        self.spans: list[tuple[int, int, int]] = []  # (first row, rows, first position)
        self.tokens: list[int] = []
        self.want: list[int] = []  # the rows whose logits are wanted
        positions: list[int] = []
        for seg in segments:
            t, start = len(seg.tokens), seg.cache.length
            row = len(self.tokens)
            self.spans.append((row, t, start))
            self.tokens.extend(seg.tokens)
            positions.extend(range(start, start + t))
            if seg.logits:
                self.want.append(row + t - 1)
        # the rows fill whole tiles (``_tiled``): a padding row is a copy of the
        # first, which no segment reads
        pad = _tiled(len(self.tokens)) - len(self.tokens)
        self.tokens.extend([self.tokens[0]] * pad)
        positions.extend([positions[0]] * pad)
        self.rot = model._rot[positions][:, None, :]  # (rows, 1, rd/2)
        shards = model.layers[0].shards if model.layers else []
        self.buffers = [_Rows(model.config, shard, self.spans) for shard in shards]


def _block_width(n: int) -> int:
    """The widest column block of at most ``BLOCK`` columns that divides ``n``."""
    for width in range(min(BLOCK, n), 15, -1):
        if n % width == 0:
            return width
    return n  # no divisor from 16 up: one block


def _blocked(w: F32) -> F32:
    """An (in, out) matrix as contiguous column blocks: (out / b, in, b)."""
    k, n = w.shape
    b = _block_width(n)
    return np.ascontiguousarray(w.reshape(k, n // b, b).transpose(1, 0, 2))


def _blocked_out(out: F32, w: F32) -> F32:
    """A view of the (rows, out) array ``out`` that ``np.matmul(x, w, out=...)`` fills."""
    blocks, _, b = w.shape
    view: F32 = out.reshape(out.shape[0], blocks, b).transpose(1, 0, 2)
    return view


# A segment's rows attend in one go when its scores padded to its last row's
# length stay within OpenBLAS's small-matrix kernel for the product with the
# values (multiply-adds per kv head: group x head_dim x length): the zero
# weights of the padding then leave each row's sums as they are alone.
_ATTEND_LIMIT = 500_000


def _by_rows(shard: _Shard, head_dim: int, t: int, start: int) -> bool:
    """Whether a segment of ``t`` rows from ``start`` attends with the single rows."""
    return t == 1 or shard.group * head_dim * (start + t) > _ATTEND_LIMIT


def _tiled(n: int) -> int:
    """``n`` rows padded to whole tiles of ``TILE`` rows."""
    return max(-(-n // TILE), 1) * TILE


def _tiles(rows: int) -> list[slice]:
    """A padded pass's rows (``_tiled``) in tiles of ``TILE`` rows."""
    return [slice(i, i + TILE) for i in range(0, rows, TILE)]


def _tile_outs(out: F32, w: F32) -> list[tuple[slice, F32]]:
    """Each tile of ``out``'s rows and its ``_blocked_out`` view."""
    return [(tile, _blocked_out(out[tile], w)) for tile in _tiles(out.shape[0])]


def _tile_matmul(x: F32, w: F32, outs: list[tuple[slice, F32]]) -> None:
    """``x @ W`` into ``outs`` (``_tile_outs``), one BLAS call per tile."""
    for tile, out in outs:
        np.matmul(x[tile], w, out=out)


def _matmul(x: F32, w: F32) -> F32:
    """``x @ W`` for a blocked ``w`` (``_blocked``): a (rows, out) array, computed in
    tiles (``x`` is padded with a zero row if need be)."""
    n = x.shape[0]
    rows = _tiled(n)
    if rows != n:
        padded = np.zeros((rows, x.shape[1]), dtype=np.float32)
        padded[:n] = x
        x = padded
    out = np.empty((rows, w.shape[0] * w.shape[2]), dtype=np.float32)
    _tile_matmul(x, w, _tile_outs(out, w))
    return out[:n]


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

        def tb(*parts: F32) -> F32:
            """``t`` in column blocks (``_blocked``)."""
            return _blocked(np.concatenate(parts, axis=0).T)

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
                        wqkv=tb(wq[qs], wk[kvs], wv[kvs]),
                        wo=tb(wo[:, qs]),
                        wgu=tb(wg[fs], wu[fs]),
                        wdown=tb(wd[:, fs]),
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
            head_future = pool.submit(lambda: weight(head_name, (vocab, d)))
            layers = list(pool.map(layer, range(config.n_layers)))
            head = head_future.result()  # (vocab, d)
        cuts = [0, vocab // 2, vocab] if len(plan) > 1 else [0, vocab]
        head_parts = [_blocked(head[a:b].T) for a, b in itertools.pairwise(cuts)]
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
        return KVCache(self.config, n_ctx, tuple(s.kv_heads for s in shards))

    # -- the forward pass --------------------------------------------------------

    def _normed(self, x: F32) -> F32:
        """``x`` over its root mean square (the norm's weights are in the next matrix).

        Row by row the same arithmetic whatever the number of rows (no BLAS dot for
        one row): a row's result does not depend on the others in the pass.
        """
        cfg = self.config
        ms_rows = np.einsum("ij,ij->i", x, x)[:, None]
        ms_rows *= 1.0 / cfg.d_model
        ms_rows += cfg.norm_eps
        np.sqrt(ms_rows, out=ms_rows)
        out: F32 = x / ms_rows
        return out

    def _embed(self, tokens: list[int]) -> F32:
        ids = np.asarray(tokens, dtype=np.intp)
        if self._embeddings is not None:
            return np.ascontiguousarray(self._embeddings[:, ids].T)
        # tied: the embedding of a token is its column of the (blocked) head
        x = np.empty((len(tokens), self.config.d_model), dtype=np.float32)
        offset = 0
        for part in self.head_parts:
            width = part.shape[0] * part.shape[2]
            rows = np.flatnonzero((ids >= offset) & (ids < offset + width))
            if rows.size:
                cols = ids[rows] - offset
                x[rows] = part[cols // part.shape[2], :, cols % part.shape[2]]
            offset += width
        return x

    def forward(self, tokens: Sequence[int], cache: KVCache) -> F32:
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
            last = i + PREFILL_CHUNK >= len(tokens)
            segment = Segment(tokens[i : i + PREFILL_CHUNK], cache, logits=last)
            (logits,) = self.forward_batch([segment], cache.worker)
        assert logits is not None
        return logits

    def forward_batch(
        self, segments: Sequence[Segment], worker: DecodeWorker | None = None
    ) -> list[F32 | None]:
        """One forward pass over several conversations; each segment's logits (or None).

        The rows of every segment go through each weight matrix together (the
        weights are read once for all of them); attention is per segment, over
        its own cache up to its own length. With ``worker`` (and a model in two
        shards) the worker computes the second half of every layer meanwhile;
        when it is busy this thread computes both, with the same result.
        """
        if not segments:
            return []
        seen: set[int] = set()
        for seg in segments:
            if not seg.tokens:
                raise ValueError("forward() needs at least one token")
            if seg.cache.length + len(seg.tokens) > seg.cache.n_ctx:
                raise ValueError(
                    f"{seg.cache.length + len(seg.tokens)} positions do not fit the context "
                    f"of {seg.cache.n_ctx}"
                )
            if id(seg.cache) in seen:
                raise ValueError("two segments of one forward pass share a cache")
            seen.add(id(seg.cache))
        plan = _Plan(self, segments)
        x = self._embed(plan.tokens)
        both = None
        if worker is not None and self.shards > 1:
            x_worker = x.copy()
            both = worker.try_run(
                lambda ex: self._shard_pass(1, x_worker, plan, ex),
                lambda ex: self._shard_pass(0, x, plan, ex),
            )
        logits = self._serial(x, plan) if both is None else np.concatenate(both, axis=1)
        out: list[F32 | None] = []
        wanted = iter(logits)
        for seg in segments:
            seg.cache.length += len(seg.tokens)
            out.append(next(wanted) if seg.logits else None)
        return out

    def _serial(self, x: F32, plan: _Plan) -> F32:
        """Every shard in this thread, the partial sums added in shard order."""
        for li, layer in enumerate(self.layers):
            h = self._normed(x)
            parts = [
                self._attention(s, shard, li, h, plan, plan.buffers[s])
                for s, shard in enumerate(layer.shards)
            ]
            for part in parts:
                x += part
            h = self._normed(x)
            parts = [self._ffn(shard, h, plan.buffers[s]) for s, shard in enumerate(layer.shards)]
            for part in parts:
                x += part
        last = self._last(x, plan)
        if len(self.head_parts) == 1:
            return _matmul(last, self.head_parts[0])
        return np.concatenate([_matmul(last, part) for part in self.head_parts], axis=1)

    def _shard_pass(self, s: int, x: F32, plan: _Plan, ex: Exchange) -> F32:
        """Shard ``s`` of every layer, in step with the thread running the other shard.

        Both threads add the two partial sums in shard order to their own copy of
        the residual, so the copies stay equal to the bit (and equal to ``_serial``).
        """
        rows = plan.buffers[s]
        for li, layer in enumerate(self.layers):
            shard = layer.shards[s]
            own = self._attention(s, shard, li, self._normed(x), plan, rows)
            other = ex.swap(own)
            x += own if s == 0 else other
            x += other if s == 0 else own
            own = self._ffn(shard, self._normed(x), rows)
            other = ex.swap(own)
            x += own if s == 0 else other
            x += other if s == 0 else own
        return _matmul(self._last(x, plan), self.head_parts[s])

    def _last(self, x: F32, plan: _Plan) -> F32:
        """The normed rows whose logits are wanted, times the output norm."""
        last = self._normed(x[plan.want])
        last *= self.out_norm
        return last

    def _attention(self, s: int, shard: _Shard, li: int, h: F32, plan: _Plan, rows: _Rows) -> F32:
        """This shard's heads for every row: QKV, RoPE, the caches, attention; its partial sum."""
        _tile_matmul(h, shard.wqkv, rows.qkv_out)
        rows.rotate *= plan.rot
        singles: list[_Single] = []
        hd = self.config.head_dim
        for i, seg in enumerate(plan.segments):
            keys = seg.cache.k[s][li]  # (kv, n_ctx, hd)
            values = seg.cache.v[s][li]
            first, t, start = plan.spans[i]
            # one arithmetic for a prompt's rows and an answer's: a position's keys,
            # values and output do not depend on how its prompt was cut in chunks
            # (prefix reuse, the batch's prefill budget)
            if _by_rows(shard, hd, t, start):
                singles.extend((first + r, start + r, keys, values) for r in range(t))
            else:
                self._attend_rows(shard, rows, first, t, start, keys, values)
        if singles:
            self._attend_singles(shard, rows, singles)
        return _matmul(rows.heads, shard.wo)

    @staticmethod
    def _attend_rows(
        shard: _Shard, rows: _Rows, first: int, t: int, start: int, keys: F32, values: F32
    ) -> None:
        """Attention of the ``t`` rows of a segment, to the bits each has alone.

        Each row's scores are its own product with the keys up to its position (the
        BLAS kernel rounds them by their length), in a (t, kv, group, t + start)
        array padded with -inf; the maximum, the exponential and the division run
        once for all rows; each row's product with the values and its sum are over
        its own length (BLAS and numpy's pairwise sum group the terms by the count).
        """
        n_q, n_kv, group = shard.q_heads, shard.kv_heads, shard.group
        qk = rows.qk[first : first + t]  # (t, q + kv heads, hd)
        hd = qk.shape[-1]
        end = start + t
        keys[:, start:end] = qk[:, n_q:].transpose(1, 0, 2)
        new_values = rows.qkv[first : first + t, (n_q + n_kv) * hd :]
        values[:, start:end] = new_values.reshape(t, n_kv, hd).transpose(1, 0, 2)
        q_heads = qk[:, :n_q]
        if shard.q_index is not None:
            q_heads = np.take(q_heads, shard.q_index, axis=1)
        q = q_heads.reshape(t, n_kv, group, hd)
        scores = np.full((t, n_kv, group, end), -np.inf, dtype=np.float32)
        keys_t = keys.transpose(0, 2, 1)
        for r in range(t):
            np.matmul(q[r], keys_t[:, :, : start + r + 1], out=scores[r, :, :, : start + r + 1])
        np.subtract(scores, np.maximum.reduce(scores, axis=-1, keepdims=True), out=scores)
        np.exp(scores, out=scores)
        attn = np.empty((t, n_kv, group, hd), dtype=np.float32)
        sums = np.empty((t, n_kv, group, 1), dtype=np.float32)
        for r in range(t):
            # Its own length, not the padded one: how BLAS splits the sum over
            # the positions depends on their count on some kernels (OpenBLAS's
            # Haswell ones), so zeros added to it could change the bits.
            weights = scores[r, :, :, : start + r + 1]
            np.matmul(weights, values[:, : start + r + 1], out=attn[r])
            np.add.reduce(weights, axis=-1, keepdims=True, out=sums[r])
        attn /= sums
        heads = rows.heads[first : first + t].reshape(t, n_q, hd)
        if shard.out_index is None:
            heads[...] = attn.reshape(t, n_q, hd)
        else:
            np.take(attn.reshape(t, n_kv * group, hd), shard.out_index, axis=1, out=heads)

    @staticmethod
    def _attend_singles(shard: _Shard, rows: _Rows, singles: list[_Single]) -> None:
        """Attention of single rows, each at its position over its own cache (answers'
        tokens, a long prompt's rows), to the bits of ``_attend_rows``.

        Each row's scores, its product with its values and its sum are its own
        calls, over its own length; the rest runs once for all, padded as there.
        """
        n_q, n_kv, group = shard.q_heads, shard.kv_heads, shard.group
        hd = rows.qk.shape[-1]
        index = [row for row, _, _, _ in singles]
        n = len(index)
        for row, pos, keys, values in singles:
            keys[:, pos] = rows.qk[row, n_q:]
            values[:, pos] = rows.qkv[row, (n_q + n_kv) * hd :].reshape(n_kv, hd)
        q_heads = rows.qk[index, :n_q]  # (n, q heads, hd)
        if shard.q_index is not None:
            q_heads = np.take(q_heads, shard.q_index, axis=1)
        q = q_heads.reshape(n, n_kv, group, hd)
        end = max(pos for _, pos, _, _ in singles) + 1
        scores = np.full((n, n_kv, group, end), -np.inf, dtype=np.float32)
        for r, (_, pos, keys, _) in enumerate(singles):
            keys_t = keys.transpose(0, 2, 1)
            np.matmul(q[r], keys_t[:, :, : pos + 1], out=scores[r, :, :, : pos + 1])
        np.subtract(scores, np.maximum.reduce(scores, axis=-1, keepdims=True), out=scores)
        np.exp(scores, out=scores)
        attn = np.empty((n, n_kv, group, hd), dtype=np.float32)
        sums = np.empty((n, n_kv, group, 1), dtype=np.float32)
        for r, (_, pos, _, values) in enumerate(singles):
            weights = scores[r, :, :, : pos + 1]
            np.matmul(weights, values[:, : pos + 1], out=attn[r])
            np.add.reduce(weights, axis=-1, keepdims=True, out=sums[r])
        attn /= sums
        heads = attn.reshape(n, n_kv * group, hd)
        if shard.out_index is not None:
            heads = np.take(heads, shard.out_index, axis=1)
        rows.heads[index] = heads.reshape(n, n_q * hd)

    @staticmethod
    def _ffn(shard: _Shard, h: F32, rows: _Rows) -> F32:
        """SwiGLU over this shard's units, in the pass's buffers; its partial output."""
        _tile_matmul(h, shard.wgu, rows.gu_out)
        act = rows.act
        # SiLU(gate) * up = gate / (1 + exp(-gate)) * up, in place, in float32
        np.negative(rows.gate, out=act)
        np.exp(act, out=act)
        act += 1.0
        np.divide(rows.gate, act, out=act)
        act *= rows.up
        return _matmul(act, shard.wdown)
