"""Two decode threads: the same answers as one, errors and cancellation intact."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest

from ssegate.local import LlamaModel, LocalEngine, SamplingParams, Text
from ssegate.local._model import _grouping, _shard_plan
from ssegate.local._parallel import DecodeWorker, Exchange

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
CPU = [{"role": "user", "content": "What is a CPU?"}]


@pytest.fixture(scope="module")
def engine1(model_path: str) -> Iterator[LocalEngine]:
    """The real model with one decode thread (unsplit layers)."""
    with LocalEngine.load(model_path, n_ctx=512, decode_threads=1) as loaded:
        yield loaded


def worker_thread_names() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "ssegate-decode"]


def test_the_default_engine_decodes_with_two_threads(
    engine: LocalEngine, engine1: LocalEngine
) -> None:
    assert engine.decode_threads == 2  # the test machine has 2+ CPUs
    assert engine1.decode_threads == 1
    assert [len(layer.shards) for layer in engine1.model.layers] == [1] * 30
    one = engine1.model.layers[0].shards[0]
    # (in, out) matrices in column blocks of 64: (out / 64, in, 64)
    assert one.wqkv.shape == (15, 576, 64)  # Q, K and V fused: 576 + 2 * 192 columns
    assert one.wgu.shape == (48, 576, 64)  # gate and up fused: 2 * 1536 columns
    first, second = engine.model.layers[0].shards
    # 9 query heads over 3 kv heads: 5 + 4, kv head 1 in both halves
    assert (first.q_heads, first.kv_heads, second.q_heads, second.kv_heads) == (5, 2, 4, 2)
    assert first.wqkv.shape == (9, 576, 64)  # (5 + 2 * 2) * 64 columns
    assert second.wqkv.shape == (8, 576, 64)  # (4 + 2 * 2) * 64
    assert first.wo.shape == (9, 5 * 64, 64)  # 576 columns
    assert (first.ffn, second.ffn) == (768, 768)
    assert [part.shape for part in engine.model.head_parts] == [(384, 576, 64)] * 2


@pytest.mark.parametrize("messages", [FRANCE, CPU])
def test_one_and_two_decode_threads_give_the_same_greedy_answer(
    engine: LocalEngine, engine1: LocalEngine, messages: list[dict[str, str]]
) -> None:
    params = SamplingParams.greedy(24)
    two = engine.generate(messages, params)
    one = engine1.generate(messages, params)
    assert "".join(two) == "".join(one)
    assert two.output_ids == one.output_ids
    assert len(two.output_ids) > 5


def test_two_threads_equal_one_thread_running_both_halves_to_the_bit(
    engine: LocalEngine, engine1: LocalEngine
) -> None:
    model: LlamaModel = engine.model
    ids = engine.encode_chat(FRANCE)
    # the embeddings are the head's columns: the residual must be a copy of them
    columns = [part[: part.shape[0] // 2] for part in model.head_parts]
    before = [c.copy() for c in columns]
    worker = DecodeWorker()
    try:
        threaded = model.new_cache(64)
        threaded.worker = worker
        serial = model.new_cache(64)  # no worker: this thread runs both shards
        unsplit = engine1.model.new_cache(64)
        a = model.forward(ids, threaded)
        b = model.forward(ids, serial)
        c = engine1.model.forward(ids, unsplit)
        assert np.array_equal(a, b)
        assert np.abs(a - c).max() < 1e-3  # other sums, other roundings
        for _ in range(6):  # the decode path
            token = int(a.argmax())
            a = model.forward([token], threaded)
            b = model.forward([token], serial)
            c = engine1.model.forward([token], unsplit)
            assert np.array_equal(a, b)
            assert np.abs(a - c).max() < 1e-3
            assert int(c.argmax()) == int(a.argmax())
        for s in range(2):
            assert np.array_equal(threaded.k[s], serial.k[s])
            assert np.array_equal(threaded.v[s], serial.v[s])
        assert threaded.length == serial.length == len(ids) + 6
    finally:
        worker.close()
    assert all(np.array_equal(c, b) for c, b in zip(columns, before, strict=True))


def test_shard_plan_and_padded_grouping(engine: LocalEngine) -> None:
    plan = _shard_plan(engine.model.config, 2)
    assert plan == [
        (range(0, 5), range(0, 2), range(0, 768)),
        (range(5, 9), range(1, 3), range(768, 1536)),
    ]
    # shard 0: kv 0 has query heads 0-2, kv 1 heads 3-4 (padded with a repeat of 4)
    width, q_index, out_index = _grouping(range(0, 5), range(0, 2), 3)
    assert width == 3
    assert q_index is not None
    assert out_index is not None
    assert q_index.tolist() == [0, 1, 2, 3, 4, 4]
    assert out_index.tolist() == [0, 1, 2, 3, 4]
    width, q_index, out_index = _grouping(range(5, 9), range(1, 3), 3)
    assert (width, q_index.tolist(), out_index.tolist()) == (3, [0, 0, 0, 1, 2, 3], [0, 3, 4, 5])  # type: ignore[union-attr]
    assert _grouping(range(0, 9), range(0, 3), 3) == (3, None, None)  # whole groups
    assert _shard_plan(engine.model.config, 1) == [(range(9), range(3), range(1536))]
    with pytest.raises(ValueError, match="decode threads must be 1 or 2: 3"):
        _shard_plan(engine.model.config, 3)


def test_decode_threads_option_is_checked(tiny_path: Path) -> None:
    with pytest.raises(ValueError, match="decode_threads must be 1 or 2: 4"):
        LocalEngine.load(tiny_path, decode_threads=4, blas_threads=None)


def test_closing_the_engine_ends_its_worker(tiny_path: Path) -> None:
    before = len(worker_thread_names())
    with LocalEngine.load(tiny_path, n_ctx=32, blas_threads=None, decode_threads=2) as tiny:
        assert len(worker_thread_names()) == before + 1
        answer = tiny.generate([], SamplingParams.greedy(4), prompt_ids=[5, 6, 7])
        assert len(list(answer)) > 0
    assert len(worker_thread_names()) == before
    with LocalEngine.load(tiny_path, n_ctx=32, blas_threads=None, decode_threads=1):
        assert len(worker_thread_names()) == before  # one thread: no worker


def test_a_busy_worker_lets_the_caller_work_alone() -> None:
    worker = DecodeWorker()
    try:

        def own(ex: Exchange) -> str:
            assert ex.swap("from caller") == "from worker"
            # a second forward pass meanwhile (another generation) does not wait
            assert worker.try_run(lambda _: "never", lambda _: "never") is None
            return "caller done"

        def job(ex: Exchange) -> str:
            assert ex.swap("from worker") == "from caller"
            return "worker done"

        assert worker.try_run(job, own) == ("caller done", "worker done")
    finally:
        worker.close()
    assert worker.try_run(lambda _: 1, lambda _: 2) is None  # closed


@pytest.mark.parametrize("side", ["worker", "caller"])
def test_an_error_on_either_thread_is_raised_and_the_worker_recovers(
    tiny_path: Path, monkeypatch: pytest.MonkeyPatch, side: str
) -> None:
    with LocalEngine.load(tiny_path, n_ctx=64, blas_threads=None, decode_threads=2) as tiny:
        model = tiny.model
        tokens = [int(t) for t in np.random.default_rng(7).integers(3, 256, 12)]
        expected = model.forward(tokens, model.new_cache(64))  # no worker: serial
        original = LlamaModel._ffn
        calls = 0

        def failing(shard, h, ws=None):  # type: ignore[no-untyped-def]
            nonlocal calls
            on_worker = threading.current_thread().name == "ssegate-decode"
            if on_worker == (side == "worker"):
                calls += 1
                if calls == 2:  # in the second layer, after one exchange went through
                    raise ArithmeticError(f"boom on the {side}")
            return original(shard, h, ws)

        cache = model.new_cache(64)
        cache.worker = tiny._worker
        with monkeypatch.context() as patch:
            patch.setattr(LlamaModel, "_ffn", staticmethod(failing))
            with pytest.raises(ArithmeticError, match=f"boom on the {side}"):
                model.forward(tokens, cache)
        # the worker is free and in step again: a new conversation works, equal to serial
        cache = model.new_cache(64)
        cache.worker = tiny._worker
        assert np.array_equal(model.forward(tokens, cache), expected)


@pytest.mark.anyio
async def test_cancelling_a_two_thread_stream_stops_it_and_frees_the_worker(
    tiny_path: Path,
) -> None:
    with LocalEngine.load(tiny_path, n_ctx=96, blas_threads=None, decode_threads=2) as tiny:
        texts = 0
        with anyio.move_on_after(30):
            async with contextlib.aclosing(
                tiny.stream([], SamplingParams.greedy(80), prompt_ids=[5, 6, 7])
            ) as events:
                async for event in events:
                    if isinstance(event, Text):
                        texts += 1
                        if texts == 3:
                            break
        assert texts == 3
        assert tiny._worker is not None
        # The decode loop leaves a cancelled stream at its next step: the step
        # under way when the reader stopped may still be running.
        with anyio.fail_after(10):
            while tiny._worker.busy:  # noqa: ASYNC110 (a flag set by another thread)
                await anyio.sleep(0.01)
        # the next stream still gets the worker and completes
        async with contextlib.aclosing(
            tiny.stream([], SamplingParams.greedy(5), prompt_ids=[5, 6, 7])
        ) as events:
            kinds = [type(event).__name__ async for event in events]
        assert kinds[0] == "Started"
        assert kinds[-1] == "Done"
