"""Greedy decoding is deterministic: the same messages at temperature 0 give the same
tokens every time, alone or in a batch, first request or tenth, with or without
prefix reuse of a pooled cache. Compared to the bit, not within a tolerance: BLAS
picks its kernel by the shapes of a call (one row, a few, many), each kernel rounds
differently, and a near-tie between two tokens then flips with the batch."""

from __future__ import annotations

import anyio
import numpy as np
import pytest

from ssegate.llm import ChatRequest, TextDelta
from ssegate.llm.providers import create_provider
from ssegate.local import LocalEngine
from ssegate.local._model import LlamaModel, Segment, _Rows, _tiled, _tiles

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
OTHERS = [
    [{"role": "user", "content": "Say hi."}],
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Tell me about the ocean."}],
]


def _first_logits(engine: LocalEngine, ids: list[int], cuts: list[int], extra: int) -> np.ndarray:
    """The logits after ``ids``, read in chunks ending at ``cuts``, with ``extra`` other
    conversations' decode rows in the pass of the last chunk."""
    model = engine.model
    cache = model.new_cache(128)
    start = 0
    for cut in cuts:
        model.forward_batch([Segment(ids[start:cut], cache, logits=False)])
        start = cut
    others = []
    for k in range(extra):
        other = model.new_cache(128)
        model.forward_batch([Segment([3 + k] * (5 + k), other, logits=False)])
        others.append(Segment([7 + k], other))
    logits = model.forward_batch([Segment(ids[start:], cache), *others])[0]
    assert logits is not None
    return logits


def test_a_prompts_logits_do_not_depend_on_the_batch_or_the_chunks(engine: LocalEngine) -> None:
    ids = engine.encode_chat(QUESTION)
    alone = _first_logits(engine, ids, [], 0)
    assert int(np.argmax(alone)) == engine.tokenizer.encode("The")[0]
    n = len(ids)
    for cuts, extra in [
        ([], 1),
        ([], 9),  # more rows than a tile
        ([n - 1], 0),  # a pooled cache held all but the last token
        ([n - 1], 3),
        ([5, 20], 0),
        ([16], 2),
    ]:
        got = _first_logits(engine, ids, cuts, extra)
        assert np.array_equal(got, alone), (cuts, extra, float(np.abs(got - alone).max()))


def test_a_decode_rows_logits_do_not_depend_on_the_batch(engine: LocalEngine) -> None:
    model = engine.model
    ids = engine.encode_chat(QUESTION)
    results = []
    for extra in (0, 1, 3, 5, 7, 8, 12):  # tiles of 2, 2, 4, 6, 8, 8+2, 8+6 rows
        cache = model.new_cache(128)
        model.forward_batch([Segment(ids, cache, logits=False)])
        others = []
        for k in range(extra):
            other = model.new_cache(128)
            model.forward_batch([Segment([3 + k] * (4 + k), other, logits=False)])
            others.append(Segment([11 + k], other))
        logits = model.forward_batch([Segment([504], cache), *others])[0]
        assert logits is not None
        results.append(logits)
    for got in results[1:]:
        assert np.array_equal(got, results[0])


def test_a_segments_rows_attend_at_once_as_each_would_alone(engine: LocalEngine) -> None:
    """``_attend_rows`` (a prompt's chunk) gives every row the bits ``_attend_singles``
    does (an answer's token), at the start of a context and deep into it."""
    model = engine.model
    rng = np.random.default_rng(7)
    for start, t in [(0, 2), (0, 64), (37, 13), (500, 64), (1980, 64)]:
        for s, shard in enumerate(model.layers[0].shards):
            caches = [model.new_cache(2048) for _ in range(3)]
            past = rng.standard_normal((2, *caches[0].k[s][0, :, :start].shape))
            for cache in caches:  # the same keys and values before ``start``
                cache.k[s][0, :, :start] = past[0]
                cache.v[s][0, :, :start] = past[1]
            together = _Rows(model.config, shard, [(0, t, start)])
            apart = _Rows(model.config, shard, [(r, 1, start + r) for r in range(t)])
            together.qkv[:] = rng.standard_normal(together.qkv.shape)
            apart.qkv[:] = together.qkv
            at_once = _Rows(model.config, shard, [(r, 1, start + r) for r in range(t)])
            at_once.qkv[:] = together.qkv
            a, b, c = caches
            LlamaModel._attend_rows(shard, together, 0, t, start, a.k[s][0], a.v[s][0])
            for r in range(t):  # one call each
                LlamaModel._attend_singles(shard, apart, [(r, start + r, b.k[s][0], b.v[s][0])])
            # one call for all (rows of different lengths)
            singles = [(r, start + r, c.k[s][0], c.v[s][0]) for r in range(t)]
            LlamaModel._attend_singles(shard, at_once, singles)
            for other, cache in ((apart, b), (at_once, c)):
                assert np.array_equal(together.heads, other.heads), (start, t, s)
                assert np.array_equal(a.k[s][0, :, : start + t], cache.k[s][0, :, : start + t])
                assert np.array_equal(a.v[s][0, :, : start + t], cache.v[s][0, :, : start + t])


def test_a_pass_is_cut_in_whole_tiles_of_8_rows() -> None:
    """Every matmul with a weight matrix takes exactly 8 rows (padded): one kernel,
    whatever the batch, so a row's bits do not depend on it on any BLAS kernel."""
    cuts = {n: [(t.start, t.stop) for t in _tiles(_tiled(n))] for n in (1, 2, 3, 8, 9, 17)}
    assert cuts == {
        1: [(0, 8)],
        2: [(0, 8)],
        3: [(0, 8)],
        8: [(0, 8)],
        9: [(0, 8), (8, 16)],
        17: [(0, 8), (8, 16), (16, 24)],
    }


async def _answer(provider: object, messages: list[dict[str, str]], max_tokens: int) -> str:
    request = ChatRequest(model="local", messages=messages, temperature=0, max_tokens=max_tokens)
    stream = provider.stream(request)  # type: ignore[attr-defined]
    texts = [e.text async for e in stream if isinstance(e, TextDelta)]
    return "".join(texts)


async def _collect(provider: object, messages: list[dict[str, str]], into: list[str]) -> None:
    into.append(await _answer(provider, messages, 12))


@pytest.mark.anyio
async def test_the_same_messages_at_temperature_0_give_the_same_answer_every_time() -> None:
    """Through ``create_provider('local')``: first request or tenth (pooled caches,
    prefix reuse), alone or among others, in a fresh engine or a used one."""
    answer = "The capital of France is Paris."
    for _ in range(2):  # a fresh engine each time
        provider = create_provider("local", n_ctx=256)
        try:
            got = [await _answer(provider, QUESTION, 12) for _ in range(3)]
            results: list[str] = []
            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(_collect, provider, QUESTION, results)
                    tg.start_soon(_answer, provider, OTHERS[i % len(OTHERS)], 6 + i)
            got += results
            got.append(await _answer(provider, OTHERS[0], 8))
            got.append(await _answer(provider, QUESTION, 12))
            assert got[-2] != answer
            del got[-2]
            assert got == [answer] * 8
            assert await _answer(provider, QUESTION, 4) == "The capital of France"
        finally:
            await provider.aclose()  # type: ignore[attr-defined]
