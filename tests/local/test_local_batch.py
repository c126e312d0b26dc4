"""Continuous batching: answers computed together equal answers computed alone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import numpy as np
import pytest
from test_local_model import ASSISTANT_IDS, PINNED, SYSTEM_IDS

from ssegate.local import (
    DEFAULT_SLOTS,
    Done,
    EngineEvent,
    Generation,
    LocalEngine,
    Sampler,
    SamplingParams,
    Started,
    Text,
)
from ssegate.local._batch import Batch, Request, Update
from ssegate.local._model import KVCache, LlamaModel, Segment, common_prefix

HI = [{"role": "user", "content": "Say hi."}]
OCEAN = [{"role": "user", "content": "Tell me about the ocean."}]
CPU = [{"role": "user", "content": "What is a CPU?"}]


@pytest.fixture(scope="module")
def engine8(model_path: str) -> Iterator[LocalEngine]:
    """The real model with the default slots (8)."""
    with LocalEngine.load(model_path, n_ctx=512) as loaded:
        yield loaded


@pytest.fixture
def tiny(tiny_path: Path) -> Iterator[LocalEngine]:
    with LocalEngine.load(tiny_path, n_ctx=96, blas_threads=None, decode_threads=2) as loaded:
        yield loaded


def request(engine: LocalEngine, ids: list[int], params: SamplingParams) -> Request:
    return Request(ids, Generation(engine.tokenizer, ids, params), Sampler(params))


class Pool:
    """A cache pool that records what comes back."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine
        self.lent: list[KVCache] = []
        self.returned: list[KVCache] = []

    def take(self, prompt: Sequence[int] = ()) -> KVCache:
        cache = self.engine.model.new_cache(self.engine.n_ctx)
        self.lent.append(cache)
        return cache

    def give(self, cache: KVCache) -> None:
        self.returned.append(cache)


def make_batch(engine: LocalEngine, chunk: int) -> tuple[Batch, Pool]:
    pool = Pool(engine)
    return Batch(engine.model, pool.take, pool.give, prefill_chunk=chunk), pool


def texts(updates: list[Update], req: Request) -> list[str]:
    return [u.text for u in updates if u.request is req]


async def collect(
    engine: LocalEngine, messages: list[dict[str, str]], params: SamplingParams
) -> list[EngineEvent]:
    async with contextlib.aclosing(engine.stream(messages, params)) as events:
        return [event async for event in events]


def test_pinned_greedy_answers_in_one_batch_of_mixed_lengths(engine8: LocalEngine) -> None:
    """The pinned prompts, read in chunks of 16 beside each other, answer as pinned."""
    batch, pool = make_batch(engine8, chunk=16)
    requests = []
    for prompt, (content_ids, answer_ids, _) in PINNED.items():
        ids = SYSTEM_IDS + content_ids + ASSISTANT_IDS
        requests.append((prompt, request(engine8, ids, SamplingParams.greedy(16)), answer_ids))
        batch.add(requests[-1][1])
    long_ids = engine8.encode_chat([{"role": "user", "content": "Describe the sea. " * 20}])
    batch.add(request(engine8, long_ids, SamplingParams.greedy(30)))  # read across many steps
    steps = 0
    pieces: dict[str, list[str]] = {prompt: [] for prompt in PINNED}
    while batch.busy:
        updates = batch.step()
        steps += 1
        for prompt, req, _ in requests:
            pieces[prompt] += texts(updates, req)
    for prompt, req, answer_ids in requests:
        assert req.generation.output_ids == answer_ids, prompt
        assert "".join(pieces[prompt]) == PINNED[prompt][2]
    assert steps > len(long_ids) // 16  # the chunks of the prompts took turns
    assert len(pool.returned) == len(pool.lent) == 5  # every cache went back


@pytest.mark.anyio
async def test_concurrent_streams_equal_their_answers_alone(engine8: LocalEngine) -> None:
    params = SamplingParams.greedy(24)
    prompts = [HI, OCEAN, CPU, OCEAN]
    alone = [await collect(engine8, messages, params) for messages in prompts]
    together: dict[int, list[EngineEvent]] = {}

    async def one(i: int) -> None:
        together[i] = await collect(engine8, prompts[i], params)

    async with anyio.create_task_group() as tg:
        for i in range(len(prompts)):
            tg.start_soon(one, i)
    assert [together[i] for i in range(len(prompts))] == alone
    assert alone[1][-1] == Done("length", alone[1][0].prompt_tokens, 24)  # type: ignore[union-attr]


def test_each_answer_keeps_its_own_settings_in_a_batch(engine8: LocalEngine) -> None:
    """Seeded sampling, a stop string and max_tokens, each as alone, side by side."""
    ocean = engine8.encode_chat(OCEAN)
    cpu = engine8.encode_chat(CPU)
    sampled = SamplingParams(temperature=0.8, seed=7, max_tokens=24)
    stopped = SamplingParams.greedy(40)
    stopped = SamplingParams(**{**_fields(stopped), "stop": (" brain",)})
    short = SamplingParams.greedy(3)
    alone = {}
    for name, ids, params in (("sampled", ocean, sampled), ("stopped", cpu, stopped)):
        generation = engine8.generate([], params, prompt_ids=ids)
        alone[name] = ("".join(generation), generation.output_ids, generation.finish_reason)
    batch, _ = make_batch(engine8, chunk=64)
    reqs = {
        "sampled": request(engine8, ocean, sampled),
        "stopped": request(engine8, cpu, stopped),
        "short": request(engine8, ocean, short),
        "sampled again": request(engine8, ocean, sampled),
    }
    for req in reqs.values():
        batch.add(req)
    pieces: dict[str, list[str]] = {name: [] for name in reqs}
    while batch.busy:
        updates = batch.step()
        for name, req in reqs.items():
            pieces[name] += texts(updates, req)
    for name in ("sampled", "stopped"):
        generation = reqs[name].generation
        assert ("".join(pieces[name]), generation.output_ids, generation.finish_reason) == alone[
            name
        ]
    assert "".join(pieces["stopped"]) == "A CPU (Central Processing Unit) is the"
    assert reqs["sampled again"].generation.output_ids == reqs["sampled"].generation.output_ids
    assert reqs["short"].generation.completion_tokens == 3
    assert reqs["short"].generation.finish_reason == "length"


def _fields(params: SamplingParams) -> dict[str, object]:
    return {name: getattr(params, name) for name in params.__dataclass_fields__}


@pytest.mark.anyio
async def test_cancelling_one_stream_never_disturbs_another(engine8: LocalEngine) -> None:
    params = SamplingParams.greedy(20)
    alone = await collect(engine8, OCEAN, params)
    seen: list[EngineEvent] = []
    together: list[EngineEvent] = []

    async def cancelled() -> None:
        with anyio.CancelScope() as scope:
            async with contextlib.aclosing(engine8.stream(CPU, params)) as events:
                async for event in events:
                    seen.append(event)
                    if len(seen) == 4:
                        scope.cancel()
                        await anyio.lowlevel.checkpoint()

    async def kept() -> None:
        together.extend(await collect(engine8, OCEAN, params))

    async with anyio.create_task_group() as tg:
        tg.start_soon(kept)
        tg.start_soon(cancelled)
    assert together == alone
    assert len(seen) == 4
    assert engine8.waiting == 0
    assert engine8._loop._batch.requests == []  # the cancelled one left the batch


def test_a_newcomer_is_read_in_chunks_between_the_running_answers_tokens(
    tiny: LocalEngine,
) -> None:
    batch, _ = make_batch(tiny, chunk=8)
    running = request(tiny, [5, 6, 7], SamplingParams.greedy(50))
    batch.add(running)
    first = batch.step()  # its prompt, and its first token
    assert [u.request for u in first] == [running]
    newcomer = request(tiny, list(range(10, 50)), SamplingParams.greedy(5))  # 40 tokens
    batch.add(newcomer)
    for _ in range(4):  # 4 chunks of 8, each beside one token of the running answer
        updates = batch.step()
        assert [u.request for u in updates] == [running]
        assert newcomer.prefilled < 40
    updates = batch.step()  # the last chunk: the newcomer's first token
    assert [u.request for u in updates] == [running, newcomer]
    assert batch.running == 2
    assert running.generation.completion_tokens == 6
    assert newcomer.generation.completion_tokens == 1


def test_with_nobody_running_prompts_are_read_in_double_chunks(tiny: LocalEngine) -> None:
    batch, _ = make_batch(tiny, chunk=8)
    a = request(tiny, list(range(10, 22)), SamplingParams.greedy(5))  # 12 tokens
    b = request(tiny, list(range(30, 40)), SamplingParams.greedy(5))  # 10 tokens
    batch.add(a)
    batch.add(b)
    assert [u.request for u in batch.step()] == [a]  # 12 + 4 of b's 10
    assert b.prefilled == 4
    assert [u.request for u in batch.step()] == [a, b]  # a's token, b's last 6


def test_answers_in_a_batch_equal_answers_alone_on_every_tensor_type(tiny: LocalEngine) -> None:
    """The tiny model (Q4_0, Q4_1, Q8_0, F16, F32, untied head): greedy ids, alone and batched."""
    prompts = [[5, 6, 7], list(range(40, 71)), [100, 3, 9, 250, 17], [200] * 12]
    params = SamplingParams.greedy(20)
    alone = []
    for ids in prompts:  # generate() runs each alone, in this thread
        generation = tiny.generate([], params, prompt_ids=ids)
        list(generation)
        alone.append(generation.output_ids)
    assert [len(ids) for ids in alone] == [20] * 4  # no early stop: 20 steps compared
    batch, _ = make_batch(tiny, chunk=6)
    reqs = [request(tiny, ids, params) for ids in prompts]
    for req in reqs:
        batch.add(req)
    while batch.busy:
        batch.step()
    assert [req.generation.output_ids for req in reqs] == alone


def test_forward_batch_logits_equal_each_alone(tiny: LocalEngine) -> None:
    model = tiny.model
    rng = np.random.default_rng(3)
    prompts = [[int(t) for t in rng.integers(3, 256, n)] for n in (9, 30, 1)]
    expected = [model.forward(ids, model.new_cache(96)) for ids in prompts]
    caches = [model.new_cache(96) for _ in prompts]
    logits = model.forward_batch([Segment(ids, c) for ids, c in zip(prompts, caches, strict=True)])
    for got, want in zip(logits, expected, strict=True):
        assert got is not None
        assert np.array_equal(got, want)  # to the bit: the batch changes nothing
    assert [c.length for c in caches] == [9, 30, 1]
    inner = model.forward_batch([Segment([4], caches[0], logits=False), Segment([4], caches[1])])
    assert inner[0] is None
    assert inner[1] is not None
    with pytest.raises(ValueError, match="two segments of one forward pass share a cache"):
        model.forward_batch([Segment([4], caches[2]), Segment([5], caches[2])])
    with pytest.raises(ValueError, match="97 positions do not fit the context of 96"):
        model.forward_batch([Segment([4], caches[2]), Segment([1] * 66, caches[1])])
    assert model.forward_batch([]) == []


@pytest.mark.anyio
async def test_a_failing_step_fails_its_answers_and_the_engine_goes_on(
    tiny: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = SamplingParams.greedy(4)
    original = tiny.model.forward_batch
    with monkeypatch.context() as patch:

        def failing(*args: object, **kwargs: object) -> object:
            raise MemoryError("no room for the activations")

        patch.setattr(tiny.model, "forward_batch", failing)
        events = tiny.stream(HI, params)
        assert isinstance(await events.__anext__(), Started)
        with pytest.raises(MemoryError, match="no room for the activations"):
            await events.__anext__()
        await events.aclose()
    assert tiny.model.forward_batch == original
    done = await collect(tiny, HI, params)
    assert isinstance(done[-1], Done)
    assert done[-1].completion_tokens == 4
    assert len(tiny._caches) == 1  # the failed answer's cache went back to the pool


@pytest.mark.anyio
async def test_closing_the_engine_ends_the_streams_in_flight(tiny_path: Path) -> None:
    tiny = LocalEngine.load(tiny_path, n_ctx=96, blas_threads=None)
    events = tiny.stream(HI, SamplingParams.greedy(80))
    assert isinstance(await events.__anext__(), Started)
    assert isinstance(await events.__anext__(), Text)
    tiny.close()
    with pytest.raises(RuntimeError, match="the engine was closed while answering"):
        async for _ in events:
            pass
    with pytest.raises(RuntimeError, match="the engine is closed"):
        await tiny.stream(HI).__anext__()


def test_the_default_is_eight_slots(tiny_path: Path) -> None:
    assert DEFAULT_SLOTS == 8
    with LocalEngine.load(tiny_path, n_ctx=32, blas_threads=None) as engine:
        assert engine.max_concurrency == 8
    with pytest.raises(ValueError, match="prefill_chunk must be at least 1: 0"):
        LocalEngine.load(tiny_path, n_ctx=32, blas_threads=None, prefill_chunk=0)


def test_a_later_turn_of_a_chat_starts_from_the_cache_of_the_earlier_one(
    engine8: LocalEngine,
) -> None:
    """The pool's cache holding the first turn is reused; the answer is the one alone."""
    first = [{"role": "user", "content": "What is the capital of France?"}]
    batch = Batch(engine8.model, engine8._take_cache, engine8._give_cache, prefill_chunk=64)
    ids = engine8.encode_chat(first)
    earlier = request(engine8, ids, SamplingParams.greedy(16))
    batch.add(earlier)
    while batch.busy:
        batch.step()
    answer = "".join([engine8.tokenizer.decode(earlier.generation.output_ids)])
    assert answer == "The capital of France is Paris."
    second = [*first, {"role": "assistant", "content": answer}]
    second.append({"role": "user", "content": "And of Italy?"})
    ids2 = engine8.encode_chat(second)
    # its cache holds its history but the last token (the end of turn: never run)
    held = common_prefix(ids2, earlier.history[:-1])
    assert held > len(ids)  # the first prompt and its answer, in the cache given back
    later = request(engine8, ids2, SamplingParams.greedy(16))
    # prompts read 2 tokens per step at most: only a reused prefix fits in one
    batch = Batch(engine8.model, engine8._take_cache, engine8._give_cache, prefill_chunk=1)
    batch.add(later)
    steps = 1
    while not batch.step():  # until its first token
        steps += 1
    assert steps == -(-(len(ids2) - held) // 2)  # it read only what follows the held part
    assert later.cache is not None
    assert later.cache.length == len(ids2)
    while batch.busy:
        batch.step()
    alone = engine8.generate([], SamplingParams.greedy(16), prompt_ids=ids2)
    list(alone)
    assert later.generation.output_ids == alone.output_ids
    assert len(alone.output_ids) > 3


def test_a_newcomer_copies_the_prefix_an_answer_in_flight_has_computed(
    tiny: LocalEngine,
) -> None:
    batch, pool = make_batch(tiny, chunk=64)
    shared = list(range(40, 70))  # a 30-token "system prompt"
    a = request(tiny, [*shared, 5, 6], SamplingParams.greedy(10))
    batch.add(a)
    batch.step()  # a's prompt is read
    b = request(tiny, [*shared, 9, 9, 9], SamplingParams.greedy(10))
    batch.add(b)
    updates = batch.step()
    assert [u.request for u in updates] == [a, b]
    # b computed only its own 3 tokens: 30 positions came from a's cache
    assert b.cache is not None
    assert b.cache.length == 33
    assert len(pool.lent) == 2
    b_cache = b.cache
    while batch.busy:
        batch.step()
    alone = tiny.generate([], SamplingParams.greedy(10), prompt_ids=[*shared, 9, 9, 9])
    list(alone)
    assert b.generation.output_ids == alone.output_ids
    # the same prompt again: all but its last token (whose logits it needs)
    c = request(tiny, [*shared, 9, 9, 9], SamplingParams.greedy(10))
    assert b_cache in pool.returned
    batch = Batch(tiny.model, lambda prompt: b_cache, pool.give, prefill_chunk=1)
    batch.add(c)
    assert [u.request for u in batch.step()] == [c]  # 2 tokens a step: 32 were held
    assert c.cache is b_cache
    assert c.cache.length == 33
    while batch.busy:
        batch.step()
    assert c.generation.output_ids == alone.output_ids


@pytest.mark.anyio
async def test_an_error_past_the_forward_pass_fails_the_answers_not_the_loop(
    tiny: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = SamplingParams.greedy(4)
    with monkeypatch.context() as patch:

        def broken(self: Sampler, logits: object, history: object = ()) -> int:
            raise ArithmeticError("the sampler broke")

        patch.setattr(Sampler, "sample", broken)
        events = tiny.stream(HI, params)
        assert isinstance(await events.__anext__(), Started)
        with pytest.raises(ArithmeticError, match="the sampler broke"):
            await events.__anext__()
        await events.aclose()
    done = await collect(tiny, HI, params)  # the loop goes on
    assert done[-1] == Done("length", done[0].prompt_tokens, 4)  # type: ignore[union-attr]
    assert tiny._loop._batch.requests == []


class Recorder:
    """The model, recording how many tokens of each segment every pass runs."""

    def __init__(self, model: LlamaModel) -> None:
        self.model = model
        self.passes: list[list[int]] = []

    def forward_batch(self, segments: Sequence[Segment], worker: object = None) -> list[object]:
        self.passes.append([len(segment.tokens) for segment in segments])
        return self.model.forward_batch(segments)  # type: ignore[return-value]


def test_chats_started_together_read_their_common_prefix_once(tiny: LocalEngine) -> None:
    shared = list(range(40, 70))  # a 30-token system prompt, in no cache yet
    recorder = Recorder(tiny.model)
    pool = Pool(tiny)
    batch = Batch(recorder, pool.take, pool.give, prefill_chunk=64)  # type: ignore[arg-type]
    a = request(tiny, [*shared, 5, 6], SamplingParams.greedy(6))
    b = request(tiny, [*shared, 9, 9, 9], SamplingParams.greedy(6))
    c = request(tiny, [100, 101, 102], SamplingParams.greedy(6))  # shares nothing
    for req in (a, b, c):
        batch.add(req)
    assert [u.request for u in batch.step()] == [a, c]  # b waits for a's prompt...
    assert [u.request for u in batch.step()] == [a, c, b]  # ...and copies 30 positions
    assert recorder.passes == [[32, 3], [1, 1, 3]]
    while batch.busy:
        batch.step()
    alone = tiny.generate([], SamplingParams.greedy(6), prompt_ids=[*shared, 9, 9, 9])
    list(alone)
    assert b.generation.output_ids == alone.output_ids
