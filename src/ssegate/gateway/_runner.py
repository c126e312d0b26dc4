"""The generation runner: generations run apart from the connection that started them.

A generation is a task of the runner (not of a request): it asks the provider,
writes every unified event into the stream store (``_records``), and ends the
stream with its outcome. Readers, on this replica or another, follow the store.

- **Detach grace.** The runner counts this process's readers of each
  generation. When the last one leaves (or none came, for ``POST /v1/streams``)
  a timer of ``grace`` seconds starts; a reader that comes back stops it; when
  it runs out the generation is cancelled (``abandoned``) so it stops costing,
  unless ``elsewhere(stream)`` says another replica has readers of it
  (``_presence``): then it waits another period.
- **Stop.** ``stop()`` cancels a local generation at once; for one running on
  another replica it ends the stream as ``cancelled``, which that replica's
  lease renewal (every ``lease_renew`` seconds) notices and cancels its task.
  Cancelling closes the provider's stream, which closes the upstream connection.
- **Leases.** The producing task holds a lease on its stream: if the process
  dies, readers everywhere get an ``error`` event when it runs out. One
  ``LeaseKeeper`` task renews all of them in one store call per tick.
- **Shutdown.** Leaving the runner ends each running generation with an
  ``error`` event (``shutdown``, retryable) rather than leaving readers waiting
  for the lease to run out.

One structured log line per generation (``ssegate.gateway.streams``) gives its
model, key id, time to first token, tokens, duration and why it ended.
``sleep`` and ``clock`` are injected so tests run the grace period in virtual time.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from types import TracebackType
from typing import TypeVar

import anyio
from anyio.abc import TaskGroup

from .._exceptions import ProviderError, StoreUnavailable, StreamEnded
from ..llm import ChatRequest, Error
from ..llm.providers import HTTPClient, HTTPProvider, stream_batches
from ..streams import CANCELLED, ERROR, LeaseKeeper, StreamStore
from ._metrics import Metrics
from ._models import Route
from ._records import to_record
from ._relay import NOTED, Relay, http_provider
from ._scope import Flag, TaskScope

__all__ = ["Generation", "Runner", "log_line", "native"]

T = TypeVar("T")

log = logging.getLogger("ssegate.gateway.streams")

#: How long leaving the runner waits for generations to write their last event
#: (the gateway passes its ``shutdown_timeout``).
SHUTDOWN_WAIT_S = 5.0
#: Most appends of one generation a store may have unwritten before the
#: producer waits for them (back-pressure on a fast model over a slow store).
UNWRITTEN = 64


class Generation:
    """One running generation, as the runner keeps it.

    ``event`` and ``cancel_scope`` make its events and scope (the runner passes
    its backend's own classes, ``native``, or on asyncio ``_scope``'s).
    """

    __slots__ = (
        "_idle",
        "accepted",
        "bucket",
        "end_reason",
        "finished",
        "first_token_at",
        "id",
        "key_id",
        "label",
        "model",
        "readers",
        "refused",
        "scope",
        "started_at",
        "stop_reason",
        "tokens",
    )

    def __init__(
        self,
        id: str,
        model: str,
        key_id: str,
        started_at: float,
        bucket: str = "",
        label: str = "",
        *,
        event: Callable[[], anyio.Event | Flag] = anyio.Event,
        cancel_scope: Callable[[], anyio.CancelScope | TaskScope] = anyio.CancelScope,
    ) -> None:
        self.id = id
        self.model = model
        self.key_id = key_id
        self.started_at = started_at
        #: What the per-key limit counts it in (``Principal.bucket``).
        self.bucket = bucket
        #: Its model's name in metrics (``Route.label``).
        self.label = label
        self.accepted = event()
        self.finished = event()
        #: The provider's refusal, when it refused before its first event.
        self.refused: ProviderError | None = None
        self.readers = 0
        self.stop_reason: str | None = None
        self.first_token_at: float | None = None
        self.tokens = 0
        self.end_reason = "running"
        self.scope = cancel_scope()
        self._idle = 0  # bumped when readers come and go: stale grace timers see it changed


def native(make: Callable[[], T]) -> Callable[[], T]:
    """What ``make`` (``anyio.Event``, ``anyio.CancelScope``) makes on the running
    backend, made without asking which backend runs.

    anyio's classes look the backend up at each construction (sniffio, then the
    backend's module: ~2 µs, three times per stream start); the backend's own
    class, which they return, constructs directly. Guarded: when the class made
    cannot be made again as one of ``make``'s, ``make`` itself.
    """
    try:
        kind = type(make())
        if kind is not make and isinstance(kind(), make):  # type: ignore[arg-type]
            return kind
    except Exception:
        pass
    return make


class Runner:
    """Runs generations into ``store``; use as an async context manager."""

    def __init__(
        self,
        store: StreamStore,
        metrics: Metrics,
        *,
        grace: float = 30.0,
        lease_ttl: float = 10.0,
        lease_renew: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
        elsewhere: Callable[[str], Awaitable[bool]] | None = None,
        shutdown_wait: float = SHUTDOWN_WAIT_S,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.grace = grace
        self.lease_ttl = lease_ttl
        self.lease_renew = min(lease_renew, lease_ttl / 2)
        self._leases = LeaseKeeper(
            store, lease_ttl, renew_every=self.lease_renew, sleep=sleep, clock=clock
        )
        self._sleep = sleep
        self._clock = clock
        self._elsewhere = elsewhere or _nobody
        self.shutdown_wait = shutdown_wait
        self._running: dict[str, Generation] = {}
        # The gauge read when exported (prometheus-client's ``set_function``):
        # how many run here is the table's size, not an inc() and a dec() per
        # stream (four Python calls and a lock each).
        metrics.active_streams.set_function(self._running.__len__)
        # A plain dict, not a Counter: a Counter's missing key and ``del`` are
        # Python calls, three per stream start.
        self._per_key: dict[str, int] = {}
        self._tasks: TaskGroup | None = None
        self._own: set[asyncio.Task[None]] = set()  # the generations' tasks, on asyncio
        self._loop: asyncio.AbstractEventLoop | None = None  # asyncio's, once running
        # The grace timers, all run by one task (_reap): (deadline, stream, the
        # generation's _idle when it started). One grace period for all, so
        # deadlines come in the order they are added.
        self._timers: deque[tuple[float, str, int]] = deque()
        self._timer_added: anyio.Event | None = None

    async def __aenter__(self) -> Runner:
        # On asyncio generations are plain tasks: an anyio task costs each a
        # handle and a frame more, which every token's resumption passes through.
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): the task group runs them
            self._loop = None
        self._event: Callable[[], anyio.Event | Flag]
        self._cancel_scope: Callable[[], anyio.CancelScope] = native(anyio.CancelScope)
        self._task_scope: Callable[[], TaskScope] | None = None
        if self._loop is not None:  # a generation's primitives without anyio (_scope)
            self._event = functools.partial(Flag, self._loop)
            self._task_scope = functools.partial(TaskScope, self._loop)
        else:
            self._event = native(anyio.Event)
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._reap, name="ssegate-grace-timers")
        self._tasks.start_soon(self._leases.run, name="ssegate-leases")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tasks, self._tasks = self._tasks, None
        assert tasks is not None
        running = list(self._running.values())
        for generation in running:
            self._cancel(generation, "shutdown")
        with anyio.move_on_after(self.shutdown_wait, shield=True):
            for generation in running:
                await generation.finished.wait()
        if self._own:
            own = list(self._own)
            for task in own:
                task.cancel()
            with anyio.move_on_after(self.shutdown_wait, shield=True):
                await asyncio.wait(own)
        tasks.cancel_scope.cancel()
        return await tasks.__aexit__(exc_type, exc, tb)

    # -- what routes ask ----------------------------------------------------

    def running(self, bucket: str) -> int:
        """How many generations run now in ``bucket`` (a key id, or an anonymous address)."""
        return self._per_key.get(bucket, 0)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The asyncio loop the runner runs in (``None`` on trio, or before it runs)."""
        return self._loop

    def now(self) -> float:
        """The runner's clock (what ``metrics.live`` is recorded in)."""
        return self._clock()

    def by_model(self) -> Counter[str]:
        """How many generations run here now, per model."""
        return Counter(g.label or g.model for g in self._running.values())

    def get(self, stream: str) -> Generation | None:
        """The generation producing ``stream`` here, if this process runs it."""
        return self._running.get(stream)

    async def start(
        self,
        stream: str,
        route: Route,
        request: ChatRequest,
        *,
        key_id: str,
        bucket: str | None = None,
    ) -> Generation:
        """Start a generation into ``stream`` (which exists once this returns);
        ``running(bucket)`` counts it (``bucket`` defaults to ``key_id``)."""
        if self._tasks is None:
            raise RuntimeError("the runner is not running")
        await self.store.acquire_lease(stream, self.lease_ttl)
        scope: Callable[[], anyio.CancelScope | TaskScope] = self._cancel_scope
        http = http_provider(route.provider)  # once a stream: for the scope and the path
        if self._task_scope is not None and _plain_asyncio(http):
            scope = self._task_scope
        generation = Generation(
            stream,
            route.model,
            key_id,
            self._clock(),
            bucket or key_id,
            route.label,
            event=self._event,
            cancel_scope=scope,
        )
        self._running[stream] = generation
        per_key, counted = self._per_key, generation.bucket
        per_key[counted] = per_key.get(counted, 0) + 1
        upstream = request.with_model(route.upstream_model)
        if self._loop is not None:
            task = self._loop.create_task(
                self._run(generation, route, upstream, scope, http), name=f"ssegate-{stream}"
            )
            self._own.add(task)
            task.add_done_callback(self._own.discard)
        else:
            self._tasks.start_soon(
                self._run, generation, route, upstream, scope, http, name=f"ssegate-{stream}"
            )
        self._idle(generation)
        return generation

    async def stop(self, stream: str) -> None:
        """Stop ``stream``'s generation: at once here, through the store elsewhere."""
        generation = self._running.get(stream)
        if generation is not None:
            self._cancel(generation, "stopped")
            with anyio.move_on_after(1.0):
                await generation.finished.wait()
            return
        try:
            await self.store.end(stream, CANCELLED)
        except StreamEnded:
            pass  # it had ended already: stopping it is done
        else:
            self.metrics.cancellations.labels("stopped").inc()

    def attach(self, stream: str) -> None:
        """A reader of ``stream`` arrived in this process."""
        generation = self._running.get(stream)
        if generation is not None:
            generation.readers += 1
            generation._idle += 1

    def detach(self, stream: str) -> None:
        """A reader of ``stream`` left; the last one starts the grace timer."""
        generation = self._running.get(stream)
        if generation is not None:
            generation.readers -= 1
            if generation.readers == 0:
                self._idle(generation)

    # -- the work -------------------------------------------------------------

    def _idle(self, generation: Generation) -> None:
        """Start the grace timer of ``generation`` (no reader here now)."""
        generation._idle += 1
        self._add_timer(generation.id, generation._idle)

    def _add_timer(self, stream: str, idle: int) -> None:
        # A timer is an entry in a queue, not a task: a generation starts one
        # when it starts (no reader yet) and whenever its last reader leaves,
        # and tasks and cancel scopes cost every stream several times as much.
        # The entry names the stream, not the generation: nothing is held for a
        # generation that has ended meanwhile.
        self._timers.append((self._clock() + self.grace, stream, idle))
        if self._timer_added is not None:
            self._timer_added.set()

    async def _reap(self) -> None:
        """Run the grace timers: at each deadline, a generation still unread
        here since the timer started is cancelled (unless read elsewhere)."""
        timers = self._timers
        while True:
            if not timers:
                self._timer_added = added = anyio.Event()
                await added.wait()
                self._timer_added = None
                continue
            deadline, stream, idle = timers[0]
            delay = deadline - self._clock()
            if delay > 0:
                await self._sleep(delay)
                continue
            timers.popleft()
            generation = self._running.get(stream)
            if generation is None or generation.readers or generation._idle != idle:
                continue  # ended, or a reader came back: its leaving starts a new timer
            assert self._tasks is not None
            self._tasks.start_soon(self._expire, generation, idle)

    async def _expire(self, generation: Generation, idle: int) -> None:
        if await self._elsewhere(generation.id):
            if generation._idle == idle:
                self._add_timer(generation.id, idle)  # read on another replica: wait again
        elif not generation.readers and generation._idle == idle:
            self._cancel(generation, "abandoned")

    def _cancel(self, generation: Generation, reason: str) -> None:
        if generation.stop_reason is None and not generation.finished.is_set():
            generation.stop_reason = reason
            generation.scope.cancel()

    async def _run(
        self,
        generation: Generation,
        route: Route,
        request: ChatRequest,
        scope: Callable[[], anyio.CancelScope | TaskScope],
        http: HTTPProvider | None,
    ) -> None:
        try:
            # What LeaseKeeper.hold(acquire=False) does (acquired by start()), in
            # a cancel scope of the generation's kind (``start``).
            leases = self._leases
            lease_scope = scope()
            lease = leases.add(generation.id, lease_scope)
            try:
                with lease_scope:
                    outcome = await self._produce(generation, route, request, http)
                    await lease.end(outcome)
            finally:
                leases.discard(lease)
            if lease.lost:  # ended elsewhere: a stop from another replica
                generation.end_reason = "stopped"
                self.metrics.cancellations.labels("stopped").inc()
        except (StreamEnded, StoreUnavailable) as exc:
            generation.end_reason = "store_error"
            log.warning("stream %s lost its store: %s", generation.id, exc)
        except Exception:  # never let one generation take the runner (and the app) down
            generation.end_reason = "internal_error"
            log.exception("generation %s failed", generation.id)
        finally:
            generation.accepted.set()
            generation.finished.set()
            del self._running[generation.id]
            per_key, counted = self._per_key, generation.bucket
            left = per_key[counted] - 1
            if left:
                per_key[counted] = left
            else:
                del per_key[counted]
            self._log(generation)

    async def _produce(
        self,
        generation: Generation,
        route: Route,
        request: ChatRequest,
        http: HTTPProvider | None,
    ) -> str:
        """Relay the provider's events into the store; the stream's outcome.

        With a store whose appender appends (memory) or queues (Redis) at once
        (``Appender.immediate``), from an HTTP provider, the events are appended
        from the upstream connection's callback (``HTTPProvider.stream_into``):
        this task only waits for the end, and no task steps per token. Elsewhere
        (another store, the built-in models) it reads, and settles the appends
        after each read. ``http``: the route's provider as ``http_provider``
        gave it (looked up once per stream, by ``start``).
        """
        store, stream, metrics = self.store, generation.id, self.metrics
        relay = Relay(generation, metrics, self._clock)
        model = relay.model
        # Appends not awaited one by one: on Redis a token's write is not waited
        # for before the next read (at most UNWRITTEN behind; all before the end).
        appender = store.appender(stream)
        # The callback path where the store and the provider allow it (see the docstring).
        http = http if appender.immediate else None
        with generation.scope:
            try:
                if http is not None:
                    await http.stream_into(request, relay.taker(appender.add))
                else:
                    append = appender.add
                    async with aclosing(stream_batches(route.provider, request)) as batches:  # type: ignore[type-var]
                        async for batch in batches:
                            if not batch:
                                continue
                            relay.read(batch)
                            for event in batch:
                                append(to_record(event))
                                if type(event) in NOTED:
                                    relay.note(event)
                            await appender.settle(UNWRITTEN)
                            # Nothing of this read is kept while the next is awaited:
                            # each is an object the collector would walk (and promote).
                            del batch, event
            except ProviderError as exc:
                generation.refused = exc
                generation.end_reason = "refused"
                metrics.upstream_errors.labels(
                    model, metrics.error_code(exc.code or "refused")
                ).inc()
                relay.outcome = await self._fail(stream, _refusal(exc))
            except (StreamEnded, StoreUnavailable):
                raise
            except Exception:  # a bug under the provider: its readers hear of it, nothing hangs
                log.exception("generation %s failed", stream)
                generation.end_reason = "internal_error"
                metrics.upstream_errors.labels(model, "internal_error").inc()
                relay.outcome = await self._fail(
                    stream, Error("internal_error", "The gateway failed during the generation.")
                )
        await appender.settle(0)  # stopped or not, what was read is written first
        outcome = relay.outcome
        if generation.stop_reason is not None:
            generation.end_reason = generation.stop_reason
            metrics.cancellations.labels(generation.stop_reason).inc()
            if generation.stop_reason == "shutdown":
                outcome = await self._fail(
                    stream,
                    Error("shutdown", "The gateway shut down during the generation.", True),
                )
            else:
                outcome = CANCELLED
        elif outcome == CANCELLED:  # the provider ended without Finish or Error
            outcome = await self._fail(
                stream, Error("truncated", "The provider's stream ended early.", True)
            )
        usage = relay.usage
        if usage is not None and usage.output_tokens is not None:
            generation.tokens = usage.output_tokens
        metrics.tokens_of[model].inc(generation.tokens)
        return outcome

    async def _fail(self, stream: str, error: Error) -> str:
        await self.store.append(stream, to_record(error))
        return ERROR

    def _log(self, generation: Generation) -> None:
        log.info(log_line(generation, self._clock()))


def log_line(generation: Generation, now: float) -> str:
    """The generation's log line (its JSON), ended ``now``.

    Written without json.dumps where its values are the usual ones (strings,
    an int, milliseconds of a usual size): the same text (a property test holds
    them equal) for ~10 of the ~40 k instructions (json's encoder per call, a
    Python call per float, ``round`` and ``repr`` of each)."""
    ttft = generation.first_token_at
    started = generation.started_at
    duration = (now - started) * 1000
    waited = None if ttft is None else (ttft - started) * 1000
    texts = (generation.id, generation.model, generation.key_id, generation.end_reason)
    if (
        type(generation.tokens) is int
        and _usual_ms(duration)
        and (waited is None or _usual_ms(waited))
        and type(texts[0]) is str
        and type(texts[1]) is str
        and type(texts[2]) is str
        and type(texts[3]) is str
    ):
        stream, model, key, end = texts
        return (
            f'{{"stream":{_ascii(stream)},"model":{_ascii(model)},"key":{_ascii(key)},'
            f'"ttft_ms":{"null" if waited is None else format(waited, ".1f")},'
            f'"tokens":{int.__repr__(generation.tokens)},'
            f'"duration_ms":{format(duration, ".1f")},"end":{_ascii(end)}}}'
        )
    record = {
        "stream": generation.id,
        "model": generation.model,
        "key": generation.key_id,
        "ttft_ms": None if waited is None else round(waited, 1),
        "tokens": generation.tokens,
        "duration_ms": round(duration, 1),
        "end": generation.end_reason,
    }
    return _compact(record)


def _usual_ms(value: float) -> bool:
    """Whether ``format(value, ".1f")`` is the JSON of ``round(value, 1)``: a float
    from 0 to 10^12 (``repr`` of the rounded float is its one-decimal text)."""
    return type(value) is float and 0.0 <= value < 1e12


#: ``json.dumps(..., separators=(",", ":"))`` without making an encoder per call.
_compact = json.JSONEncoder(separators=(",", ":")).encode
#: What that encoder writes a string as (ensure_ascii).
_ascii = json.encoder.encode_basestring_ascii


def _plain_asyncio(http: HTTPProvider | None) -> bool:
    """Whether a provider (``http``: it as ``http_provider`` gives it) waits on
    asyncio alone while it streams, so that its
    generation may take a ``TaskScope`` (``_scope``): an HTTP provider over
    aiohttp. A cancellation the task scope sends goes through anyio's shields
    (``to_thread.run_sync``'s wait for a thread: the local model's step; httpx's
    pool clean-up), so any other provider keeps anyio's cancel scope, which
    waits for them."""
    return http is not None and isinstance(http.client, HTTPClient)


async def _nobody(stream: str) -> bool:
    return False


def _refusal(exc: ProviderError) -> Error:
    code = exc.code or type(exc).__name__
    return Error(code, str(exc), exc.retryable, exc.status)
