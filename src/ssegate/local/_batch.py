"""Continuous batching: one decode loop steps every running answer together.

Decoding a token is bound by memory bandwidth: each step reads all the weights
for a handful of multiply-adds per weight. So the engine runs one loop that
advances every answer in flight by one token per step, in a single forward pass
(``LlamaModel.forward_batch``): the weights are read once for all of them, and
eight answers cost little more than one.

- ``Batch`` is the sans-IO core. ``add()`` takes a request; each ``step()`` runs
  one forward pass: one token of every running answer, plus up to
  ``prefill_chunk`` prompt tokens of the newcomers, first come first served (so
  a long prompt delays the running answers by one chunk per step, not by the
  whole prompt; with nobody running, twice that). A newcomer whose prompt is
  read samples its first token and runs from the next step on; an answer that
  ends (a stop, ``max_tokens``, a full context) or is cancelled leaves, and its
  KV cache goes back to the engine's pool. Every answer keeps its own sampling
  settings, random generator, stop strings and cache.
- Prompts that begin alike are not read twice: a newcomer starts from the
  longest prefix of its prompt that a pooled cache holds or an answer in flight
  has computed (the shared system prompt; the earlier turns of a chat, which
  every request repeats). Keys and values at a position depend only on the ids
  up to it, so the answer is the same. A newcomer whose prompt shares much
  more with a prompt being read in this pass waits for the next one and copies
  it: chats started together read their common system prompt once.
- ``DecodeLoop`` is the thread that runs ``Batch.step()`` while there is work
  and hands each request's text to its reader (``wait()``, from any thread).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._generation import Generation
from ._model import KVCache, LlamaModel, Segment, common_prefix
from ._parallel import DecodeWorker
from ._sampling import Sampler

__all__ = ["Batch", "DecodeLoop", "Request", "Update"]

# an idle loop that gets a request waits until none has come for this long
# (at most _GATHER_MAX_S), so that requests sent together start together
_GATHER_QUIET_S = 0.002
_GATHER_MAX_S = 0.02
# a newcomer waits a pass for a prompt being read that shares this many more ids
_DEFER_GAIN = 16


@dataclass(eq=False, slots=True)
class Request:
    """One answer in the decode loop: its prompt, its state, what its reader has not read."""

    prompt: list[int]
    generation: Generation
    sampler: Sampler
    history: list[int] = field(default_factory=list)  # prompt and answer so far
    cache: KVCache | None = None
    prefilled: int = 0  # prompt tokens in the cache
    pending: int | None = None  # the last token, to run at the next step
    # the reader's side, guarded by the loop's lock
    texts: list[str] = field(default_factory=list)
    over: bool = False
    error: BaseException | None = None
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class Update:
    """What one step did for one request: new text, and whether it is over (or failed)."""

    request: Request
    text: str = ""
    over: bool = False
    error: BaseException | None = None


class Batch:
    """The requests in flight and the step that advances them all (no threads, no I/O).

    ``take_cache``/``give_cache`` lend and take back KV caches (the engine's pool);
    ``pooled(prompt)`` says how much of ``prompt`` the pool's best cache holds.
    """

    def __init__(
        self,
        model: LlamaModel,
        take_cache: Callable[[Sequence[int]], KVCache],
        give_cache: Callable[[KVCache], None],
        *,
        prefill_chunk: int = 64,
        worker: DecodeWorker | None = None,
        pooled: Callable[[Sequence[int]], int] | None = None,
    ) -> None:
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be at least 1: {prefill_chunk!r}")
        self._model = model
        self._take_cache = take_cache
        self._give_cache = give_cache
        self.prefill_chunk = prefill_chunk
        self._worker = worker
        self._pooled = pooled or (lambda prompt: 0)
        self._prefilling: deque[Request] = deque()  # first come, first read
        self._running: list[Request] = []

    @property
    def busy(self) -> bool:
        return bool(self._prefilling or self._running)

    @property
    def running(self) -> int:
        """Answers past their prompt, decoding one token per step."""
        return len(self._running)

    @property
    def requests(self) -> list[Request]:
        return [*self._running, *self._prefilling]

    def add(self, request: Request) -> None:
        request.history = list(request.prompt)
        self._prefilling.append(request)

    def drop(self, request: Request) -> None:
        """Take ``request`` out (cancelled, finished or failed); its cache goes back."""
        if request in self._running:
            self._running.remove(request)
        elif request in self._prefilling:
            self._prefilling.remove(request)
        cache = request.cache
        if cache is not None:
            cache.tokens = request.history[: cache.length]  # what a later prompt may reuse
            self._give_cache(cache)
            request.cache = None

    def _shared_in_flight(self, prompt: Sequence[int]) -> int:
        """The most of ``prompt`` that an answer in flight has computed."""
        return max(
            (
                common_prefix(other.history[: other.cache.length], prompt)
                for other in self.requests
                if other.cache is not None
            ),
            default=0,
        )

    def _admit(self, request: Request) -> KVCache:
        """A cache for ``request``, holding as much of its prompt as any cache here has.

        The pool's cache that shares the longest prefix with the prompt is taken;
        an answer in flight that shares a longer one lends its keys and values
        (a copy of those positions). At least the prompt's last token is left to
        compute: its logits give the first token.
        """
        prompt = request.prompt
        limit = len(prompt) - 1
        cache = self._take_cache(prompt)
        best = min(common_prefix(cache.tokens, prompt), limit)
        source: KVCache | None = None
        for other in self.requests:
            if other.cache is None or other is request or other.cache is cache:
                continue
            shared = min(common_prefix(other.history[: other.cache.length], prompt), limit)
            if shared > best:
                best, source = shared, other.cache
        if source is not None:
            cache.copy_prefix(source, best)
        cache.tokens = []
        cache.length = best
        request.cache = cache
        request.prefilled = best
        return cache

    def _defer(self, request: Request, reading: list[Sequence[int]]) -> bool:
        """Whether ``request`` should wait a pass: a prompt read in this one shares
        ``_DEFER_GAIN`` more of its ids than any cache holds now (chats started
        together, with one system prompt: it is read once, then copied).
        """
        prompt = request.prompt
        soon = max((common_prefix(ids, prompt) for ids in reading), default=0)
        if soon < _DEFER_GAIN:
            return False
        now = max(self._pooled(prompt), self._shared_in_flight(prompt))
        return min(soon, len(prompt) - 1) - now >= _DEFER_GAIN

    def step(self) -> list[Update]:
        """One forward pass: a token of every running answer and a chunk of prompts."""
        segments: list[Segment] = []
        stepped: list[Request] = []
        for request in self._running:
            assert request.cache is not None
            assert request.pending is not None
            segments.append(Segment([request.pending], request.cache))
            stepped.append(request)
        budget = self.prefill_chunk if self._running else 2 * self.prefill_chunk
        reading: list[Sequence[int]] = []  # the prompt positions this pass computes
        for request in self._prefilling:
            if budget == 0:
                break
            if request.cache is None:
                if self._defer(request, reading):
                    continue
                self._admit(request)
            cache = request.cache
            assert cache is not None
            take = min(budget, len(request.prompt) - request.prefilled)
            end = request.prefilled + take
            chunk = request.prompt[request.prefilled : end]
            segments.append(Segment(chunk, cache, logits=end == len(request.prompt)))
            reading.append(request.prompt[:end])
            stepped.append(request)
            request.prefilled = end
            budget -= take
        if not segments:
            return []
        try:
            logits = self._model.forward_batch(segments, self._worker)
        except Exception as exc:  # every answer of this pass fails; the others go on
            for request in stepped:
                self.drop(request)
            return [Update(request, over=True, error=exc) for request in stepped]
        updates: list[Update] = []
        for request, row in zip(stepped, logits, strict=True):
            if row is None:  # an inner chunk of a prompt
                continue
            if request.pending is None:  # the prompt is read: it runs from now on
                self._prefilling.remove(request)
                self._running.append(request)
            token = request.sampler.sample(row, request.history)
            request.history.append(token)
            generation = request.generation
            text = generation.feed(token)
            assert request.cache is not None
            if not generation.done and request.cache.room == 0:
                text += generation.feed(None)  # no room to run this token: "length"
            request.pending = token
            if generation.done:
                self.drop(request)
            updates.append(Update(request, text, generation.done))
        return updates


class DecodeLoop:
    """The thread that runs a ``Batch``: requests go in with ``submit()``, text out by ``wait()``.

    The thread starts with the first request and sleeps while there is none.
    ``cancel()`` takes a request out at the next step. ``close()`` ends the
    thread; requests still in flight then fail with ``RuntimeError``.
    """

    def __init__(self, batch: Batch, name: str = "ssegate-batch") -> None:
        self._batch = batch
        self._name = name
        self._cond = threading.Condition()
        self._inbox: list[Request] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, request: Request) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._inbox.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def cancel(self, request: Request) -> None:
        """Stop computing ``request`` (its slot is free at the next step)."""
        with self._cond:
            request.cancelled = True
            self._cond.notify_all()

    def wait(self, request: Request) -> tuple[list[str], bool]:
        """Block until ``request`` has new text or is over: (the texts, over).

        Raises the error that ended it, if one did. Returns at once, with nothing,
        if it was cancelled.
        """
        with self._cond:
            while not (request.texts or request.over or request.cancelled):
                self._cond.wait()
            texts, request.texts = request.texts, []
            if request.error is not None:
                raise request.error
            return texts, request.over

    def _run(self) -> None:
        batch = self._batch
        while True:
            with self._cond:
                while not self._closed and not self._inbox and not batch.busy:
                    self._cond.wait()
                if not batch.busy:
                    self._gather()
                if self._closed:
                    break
                for request in self._inbox:
                    batch.add(request)
                self._inbox.clear()
                for request in batch.requests:
                    if request.cancelled:
                        batch.drop(request)
            try:
                updates = batch.step()
            except Exception as exc:  # a bug past the forward pass: fail what is in flight
                with self._cond:
                    updates = [Update(r, over=True, error=exc) for r in batch.requests]
                    for request in batch.requests:
                        batch.drop(request)
            with self._cond:
                for update in updates:
                    request = update.request
                    if update.text:
                        request.texts.append(update.text)
                    request.over = update.over
                    request.error = update.error
                self._cond.notify_all()
        self._fail_all(RuntimeError("the engine was closed while answering"))

    def _gather(self) -> None:
        """Waking up idle: let requests sent at the same moment arrive (a few ms at most).

        Chats started together then have their prompts read in the same first
        pass, rather than all but the first waiting for a pass of its own.
        """
        deadline = time.monotonic() + _GATHER_MAX_S
        while not self._closed and time.monotonic() < deadline:
            arrived = len(self._inbox)
            self._cond.wait(_GATHER_QUIET_S)  # the caller holds the lock
            if len(self._inbox) == arrived:
                return

    def _fail_all(self, error: BaseException) -> None:
        with self._cond:
            for request in [*self._inbox, *self._batch.requests]:
                self._batch.drop(request)
                request.error = error
                request.over = True
            self._inbox.clear()
            self._cond.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is None or not thread.is_alive():  # else the thread does it as it ends
            self._fail_all(RuntimeError("the engine was closed while answering"))
