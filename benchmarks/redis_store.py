"""RedisStore write path: group commit against one Lua call per event, in one run.

    .venv/bin/python benchmarks/redis_store.py [--quick] [--redis-url URL] [--no-uvloop]

The peer is the write path RedisStore had before group commit, reproduced here
(``PerEventRedisStore``): one ``EVALSHA`` per ``append()``, each awaited on its
own. Both run against the same real Redis (``REDIS_URL``, else 127.0.0.1:6379,
else a redis-server of our own), from one process, as a gateway replica would.

1. Appends/s and client CPU per append (the whole process's CPU time divided
   by the appends) with 1, 10, 100 and 1 000 concurrent writers, each writing
   as fast as its awaits return to a stream of its own, for a fixed time.
2. The write path alone: 1 000 streams x 20 tokens/s (paced, as generations
   are), no readers: ``append()`` latency and CPU per token, beside a
   ``MemoryStore`` as the floor (what the producers cost without any store I/O).
3. The target: 1 000 streams x 20 tokens/s, each followed by a reader through
   a ``Hub``, the way the gateway relays a generation. Delivered % (every
   token must arrive, in order, exactly once), added per-token latency
   (``append()`` called -> reader got it) p50/p99, and process CPU per token
   (writers, hub and readers together), the MemoryStore row again the floor.
   Target: 100 % delivered, p99 <= 20 ms over the floor. The hub's read path
   before (one blocking ``XREAD`` naming every followed stream, as on main
   before the notification stream: ``AllStreamsReadRedisStore``) beside the
   notification stream, with and without the hand-over of the process's own
   writes to its hub.

    .venv/bin/python benchmarks/redis_store.py --parts target   # that table alone

4. What a Hub keeps per event, for subscribers that lag (``--parts kept``):
   tracked objects per kept event (``gc.get_objects()``) and what a full
   collection costs per kept event (the fastest of 7 ``gc.collect()``), 200
   streams x 200 events; and the cyclic garbage per event the appends and the
   hub leave (what only the collector frees: found with it disabled meanwhile).

``--baseline TREE`` (another source tree, e.g. ``git worktree add`` of main)
runs parts 3 and 4 side by side with that tree's RedisStore and Hub, each
measurement in a fresh process of its own (``TREE/src`` first on the baseline's
``PYTHONPATH``), interleaved, at ``--side-streams`` streams (default 100 and
1 000): the MemoryStore floor, the baseline and this tree, under the same load.
Those processes set the collector up as ``ssegate serve`` does (start-up
objects frozen, its thresholds; ``--gc default``: Python's own).

    .venv/bin/python benchmarks/redis_store.py --parts target kept --baseline ../main

5. ``--parts relay`` (with ``--baseline`` only): part 3 the way the gateway
   relays a generation: each token added to its stream's appender from a timer
   callback (no task step per token), each stream read through the Hub by a
   subscriber taking its events by a ``Tap``; the cost a store adds per
   token, beside the MemoryStore floor.

    .venv/bin/python benchmarks/redis_store.py --parts relay --baseline ../main --side-streams 1000

Figures are medians of ``--repeats`` runs (1 with ``--quick``). The machine is
shared and noisy: read the ratios (the load average is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import anyio
import redis.asyncio as aioredis
from _report import Report
from fanout import load, median_of, pct, run_with_redis, wait_until  # benchmarks/ is on sys.path

from ssegate import Event, StoreUnavailable
from ssegate.streams import End, Hub, MemoryStore, StreamStore
from ssegate.streams._hub import Tap
from ssegate.streams._store import Page, Waker, format_id
from ssegate.streams.redis import _AFTER, _LIB, RedisStore, _epoch, _epoch_arg, _RedisWaker

# The per-event script RedisStore used before group commit, as it was.
_PER_EVENT_APPEND = (
    _LIB
    + """
local o = ended(KEYS[1], KEYS[2], ARGV[1])
if o then return redis.error_reply('SSEGATE_ENDED ' .. o) end
create(KEYS[2], ARGV[3])
local seq = redis.call('HINCRBY', KEYS[2], 'last', 1)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], entry_id(KEYS[2], seq), unpack(ARGV, 4))
announce({'-', name_of(KEYS[1]), seq}, ARGV[1])  -- as every write now does, for the hubs
return id
"""
)


class PerEventRedisStore(RedisStore):
    """The peer: RedisStore with its former write path, one Lua call per append."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._per_event = self.redis.register_script(_PER_EVENT_APPEND)

    async def _append(self, stream: str, event: Event) -> str:
        data, kind, retry = self._values(event)
        fields = [b"d", data]
        if kind:
            fields += [b"e", kind]
        if retry:
            fields += [b"r", retry]
        args: list[bytes | int | str] = [self._ttl_ms, self.max_len, _epoch_arg(), *fields]
        async with self._errors(stream):
            entry_id = await self._per_event(keys=self._script_keys(stream), args=args)
        number, _, epoch = entry_id.partition(b"-")
        return format_id(_epoch(epoch), int(number))


class AllStreamsReadRedisStore(RedisStore):
    """Before: the hub's read as it was, one blocking ``XREAD`` naming every followed stream.

    Redis wakes such a read with whatever stream got data first, so under load
    the hub reads about twice per write, naming all the streams each time.
    """

    async def _wait(
        self, cursors: Mapping[str, int], max_wait: float, waker: Waker | None
    ) -> dict[str, Page]:
        assert waker is None or isinstance(waker, _RedisWaker)
        names: dict[bytes, str] = {}
        streams: dict[bytes | str, bytes | str] = {}
        base = self.prefix.encode()
        for stream, cursor in cursors.items():
            key = b"%s{%s}:log" % (base, stream.encode())
            names[key] = stream
            streams[key] = b"%d%s" % (cursor, _AFTER)
        if waker is not None:
            streams[waker.key] = waker.last_id
        async with self._errors():
            reply: Any = await self.redis.xread(
                streams,  # type: ignore[arg-type]
                count=self.batch,
                block=max(int(max_wait * 1000), 1),
            )
        pages: dict[str, Page] = {}
        for key, entries in reply.items() if isinstance(reply, dict) else reply or ():
            name = names.get(key)
            if name is None:
                if waker is not None and entries:
                    waker.last_id = entries[-1][0]
                continue
            if entries:
                first, events, outcome, epoch = self._entries(entries)
                pages[name] = Page(first, events, outcome, epoch=epoch)
        return pages


class NoHandOverRedisStore(RedisStore):
    """After, but the hub reads back what its own process wrote (no ``_hand_over``).

    Its writes are announced unsigned on the shared notification stream, which
    its hub blocks on.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        script = self._append_script

        async def unsigned(*, keys: Any, args: list[Any], **kwargs: Any) -> Any:
            args[2] = b"-"  # the store's id (see RedisStore._write)
            return await script(keys=[self._notify_key], args=args, **kwargs)

        self._append_script = unsigned  # type: ignore[assignment]

    def _hand_over(self, *args: Any) -> None:
        pass


Factory = Callable[[str], StreamStore]


async def delete_prefix(url: str, prefix: str) -> None:
    admin = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in admin.scan_iter(match=prefix + "*", count=1000)]
        for start in range(0, len(keys), 1000):
            await admin.delete(*keys[start : start + 1000])
    finally:
        await admin.aclose()


async def writers(url: str, make: Factory, count: int, seconds: float) -> dict[str, float]:
    """``count`` writers appending back to back for ``seconds``: appends/s, CPU per append."""
    prefix = f"ssegate-bench:{uuid.uuid4().hex[:8]}:"
    done = 0
    async with make(prefix) as store:
        # Create the streams first: the timed part is appends to live streams.
        async with anyio.create_task_group() as tg:
            for w in range(count):
                tg.start_soon(store.create, f"w{w}")
        stop = False

        async def write(w: int) -> None:
            nonlocal done
            stream = f"w{w}"
            while not stop:
                await store.append(stream, Event("token", event="token"))
                done += 1

        async with anyio.create_task_group() as tg:
            for w in range(count):
                tg.start_soon(write, w)
            cpu, started = time.process_time(), time.perf_counter()
            await anyio.sleep(seconds)
            at_stop, cpu_stop = done, time.process_time()
            elapsed = time.perf_counter() - started
            stop = True
    await delete_prefix(url, prefix)
    return {"rate": at_stop / elapsed, "cpu_us": (cpu_stop - cpu) / at_stop * 1e6}


async def target(
    url: str, make: Factory, streams: int, rate: float, seconds: float, readers: bool = True
) -> dict[str, float]:
    """``streams`` generations at ``rate`` tokens/s, each followed through a Hub.

    Without ``readers``, the write path alone: latencies are then those of ``append()``.
    """
    prefix = f"ssegate-bench:{uuid.uuid4().hex[:8]}:"
    tokens = int(rate * seconds)
    latencies: list[float] = []
    wrong = 0
    joined = 0
    failed = 0
    async with make(prefix) as store, AsyncExitStack() as stack:
        hub = await stack.enter_async_context(Hub(store, queue_size=4096)) if readers else None

        async def follow(stream: str) -> None:
            nonlocal joined, wrong
            previous = -1
            assert hub is not None
            async for item in hub.read(stream, missing_ok=True):
                if isinstance(item, End):
                    break
                if not isinstance(item, Event):
                    wrong += 1  # a Gap: tokens lost
                    continue
                if item.data == "warm-up":
                    joined += 1
                    continue
                sent, _, number = item.data.partition(" ")
                latencies.append(time.perf_counter() - float(sent))
                wrong += int(number) <= previous  # out of order, or twice
                previous = int(number)

        async def produce(s: int, start: float) -> None:
            nonlocal failed
            stream = f"g{s}"
            # Spread the streams' ticks over the interval, as real generations are.
            due = start + (s / streams) / rate
            for n in range(tokens):
                await anyio.sleep(max(0.0, due - time.perf_counter()))
                sent = time.perf_counter()
                try:
                    await store.append(stream, Event(f"{sent!r} {n}", event="token"))
                except StoreUnavailable:
                    failed += 1  # the peer's pool ran dry: not delivered
                else:
                    if not readers:
                        latencies.append(time.perf_counter() - sent)
                due += 1 / rate
            await store.end(stream)

        async with anyio.create_task_group() as tg:
            if hub is not None:
                for s in range(streams):
                    tg.start_soon(follow, f"g{s}")
                # Measure the steady state: every reader has joined and follows live.
                await wait_until(lambda: hub.subscribers == streams)
            async with anyio.create_task_group() as warm:
                for s in range(streams):
                    warm.start_soon(store.append, f"g{s}", Event("warm-up"))
            await wait_until(lambda: hub is None or joined == streams)
            cpu = time.process_time()
            with GcPauses() as pauses:
                async with anyio.create_task_group() as producers:
                    start = time.perf_counter() + 0.05
                    for s in range(streams):
                        producers.start_soon(produce, s, start)
        cpu = time.process_time() - cpu
    if isinstance(store, RedisStore):
        await delete_prefix(url, prefix)
    expected = streams * tokens
    if wrong:
        raise RuntimeError(f"{wrong} tokens out of order, repeated or lost in a gap")
    return {
        "delivered": len(latencies) / expected * 100,
        "failed": failed,
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        "cpu_us": cpu / expected * 1e6,
        "gc_full": pauses.full,
        "gc_max_ms": pauses.longest * 1e3,
    }


async def relay(
    url: str, make: Factory, streams: int, rate: float, seconds: float
) -> dict[str, float]:
    """``streams`` generations at ``rate`` tokens/s relayed the gateway's way.

    Each token is added to its stream's appender from a timer callback (as the
    gateway adds them from the upstream connection's: no task step per token),
    and each stream is read through a Hub by a subscriber taking its events by
    a ``Tap`` (the push path). Latency: ``add()`` called -> taken.
    """
    prefix = f"ssegate-bench:{uuid.uuid4().hex[:8]}:"
    tokens = int(rate * seconds)
    latencies: list[float] = []
    wrong = [0]

    def note(previous: list[int], event: Event) -> None:
        sent, _, seq = event.data.partition(" ")
        if sent != "warm-up":
            latencies.append(time.perf_counter() - float(sent))
            wrong[0] += int(seq) <= previous[0]  # out of order, or twice
            previous[0] = int(seq)

    class Taker(Tap):
        __slots__ = ("previous",)

        def __init__(self) -> None:
            super().__init__()
            self.previous = [-1]

        def take(self, event: Event) -> bool:
            note(self.previous, event)
            return True

    loop = asyncio.get_running_loop()
    async with make(prefix) as store, Hub(store, queue_size=4096) as hub:
        names = [f"g{s}" for s in range(streams)]

        async def follow(stream: str) -> None:
            taker = Taker()
            async for item in hub.read(stream, missing_ok=True, tap=taker):
                if isinstance(item, End):
                    return
                if not isinstance(item, Event):
                    wrong[0] += 1  # a Gap: tokens lost
                else:
                    note(taker.previous, item)

        readers = [loop.create_task(follow(stream)) for stream in names]
        await wait_until(lambda: hub.subscribers == streams)
        appenders = [store.appender(stream) for stream in names]
        for appender in appenders:
            appender.add(Event("warm-up 0"))
        for appender in appenders:
            await appender.settle(0)
        await asyncio.sleep(0.2)
        done: asyncio.Future[None] = loop.create_future()
        left = [streams]

        def tick(s: int, n: int, due: float) -> None:
            appenders[s].add(Event(f"{time.perf_counter()!r} {n}", event="token"))
            if n + 1 < tokens:
                due += 1 / rate
                loop.call_at(loop.time() + max(0.0, due - time.perf_counter()), tick, s, n + 1, due)
            else:
                left[0] -= 1
                if not left[0]:
                    done.set_result(None)

        cpu = time.process_time()
        with GcPauses() as pauses:
            start = time.perf_counter() + 0.05
            for s in range(streams):
                # Spread the streams' ticks over the interval, as real generations are.
                due = start + (s / streams) / rate
                loop.call_at(loop.time() + (due - time.perf_counter()), tick, s, 0, due)
            await done
            for appender in appenders:
                await appender.settle(0)
            for stream in names:
                await store.end(stream)
            await asyncio.gather(*readers)
        cpu = time.process_time() - cpu
    if isinstance(store, RedisStore):
        await delete_prefix(url, prefix)
    if wrong[0]:
        raise RuntimeError(f"{wrong[0]} tokens out of order, repeated or lost in a gap")
    return {
        "delivered": len(latencies) / (streams * tokens) * 100,
        "failed": 0,
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        "cpu_us": cpu / (streams * tokens) * 1e6,
        "gc_full": pauses.full,
        "gc_max_ms": pauses.longest * 1e3,
    }


async def kept(url: str, make: Factory, streams: int = 200, events: int = 200) -> dict[str, float]:
    """What a Hub keeps per event for its subscribers: tracked objects, full-collection time.

    ``streams`` streams of ``events`` events each, every stream followed by one
    subscriber that keeps up (the hub's ring holds the events for those that lag).
    """
    prefix = f"ssegate-bench:{uuid.uuid4().hex[:8]}:"
    got = 0

    def fastest_collection() -> float:
        times = []
        for _ in range(7):
            started = time.perf_counter()
            gc.collect()
            times.append(time.perf_counter() - started)
        return min(times)

    async with make(prefix) as store, Hub(store, queue_size=1024) as hub:

        async def follow(stream: str) -> None:
            nonlocal got
            async for _ in hub.read(stream, missing_ok=True):
                got += 1

        async def append_all(data: str) -> None:
            async with anyio.create_task_group() as tg:
                for s in range(streams):
                    tg.start_soon(store.append, f"k{s}", Event(data, event="token"))

        async with anyio.create_task_group() as tg:
            for s in range(streams):
                tg.start_soon(follow, f"k{s}")
            await wait_until(lambda: hub.subscribers == streams)
            await append_all("warm-up")
            await wait_until(lambda: got == streams)
            objects, empty = len(gc.get_objects()), fastest_collection()
            gc.disable()  # what the appends leave for the collector alone to free
            try:
                for n in range(events):
                    await append_all(f"token {n}")
                await wait_until(lambda: got == streams * (events + 1))
            finally:
                gc.enable()
            garbage = gc.collect()
            more, full = len(gc.get_objects()) - objects, fastest_collection()
            tg.cancel_scope.cancel()
    if isinstance(store, RedisStore):
        await delete_prefix(url, prefix)
    total = streams * events
    return {
        "garbage": garbage / total,
        "tracked": more / total,
        "collect_ns": (full - empty) / total * 1e9,
        "full_ms": full * 1e3,
    }


class GcPauses:
    """The cyclic collector's pauses while measuring (``gc.callbacks``).

    A full collection walks every tracked object in the process, the hub's
    rings (up to ``queue_size`` events per stream, each in a page) included,
    and stops the event loop, every stream on it, while it runs.
    """

    def __init__(self) -> None:
        self.full = 0
        self.longest = 0.0
        self._started = 0.0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.longest = max(self.longest, time.perf_counter() - self._started)
        self.full += info["generation"] == 2


async def main(args: argparse.Namespace) -> None:
    url = args.redis_url

    def memory(prefix: str) -> StreamStore:
        return MemoryStore()

    def per_event(prefix: str) -> RedisStore:
        return PerEventRedisStore(url, prefix=prefix)

    def group(prefix: str) -> RedisStore:
        return RedisStore(url, prefix=prefix)

    def group_window(prefix: str) -> RedisStore:
        return RedisStore(url, prefix=prefix, append_window=0.002)

    def all_streams_read(prefix: str) -> RedisStore:
        return AllStreamsReadRedisStore(url, prefix=prefix)

    def no_hand_over(prefix: str) -> RedisStore:
        return NoHandOverRedisStore(url, prefix=prefix)

    if args.one:  # one measurement for --baseline's side by side, as JSON
        make = {"memory": memory, "group": group}[args.design]
        collector: Any = contextlib.nullcontext()
        if args.gc == "gateway":  # as the tree's `ssegate serve` runs it
            try:
                from ssegate.cli._serve import serving_collector
            except ImportError:  # a tree from before the collector's clock
                from ssegate.cli._serve import GC_THRESHOLDS
                from ssegate.server import freeze_startup_objects

                freeze_startup_objects()
                gc.set_threshold(*GC_THRESHOLDS)
            else:
                collector = serving_collector()
        async with collector:
            if args.one == "kept":
                result = await kept(url, make)
            else:
                part = target if args.one == "target" else relay
                result = await part(url, make, args.streams, 20.0, args.target_seconds)
        print(json.dumps(result))
        return
    print(
        f"RedisStore, median of {args.repeats} (loop: {args.loop}; Redis {url}; "
        f"shared noisy machine, load average {load()})"
    )
    args.charts = Report(
        "redis_store", "RedisStore's write and read paths against simpler designs."
    )
    if "writers" in args.parts:
        await writers_table(args, url, per_event, group)
    if "alone" in args.parts:
        await alone_table(args, url, memory, per_event, group)
    if args.baseline:
        side_by_side(args, url)
    else:
        if "target" in args.parts:
            await target_table(
                args, url, memory, all_streams_read, no_hand_over, group, group_window
            )
        if "kept" in args.parts:
            r = await median_of(args.repeats, partial(kept, url, group))
            print(
                f"\nkept per event by a Hub on Redis, 200 streams x 200 events: "
                f"{r['tracked']:.2f} tracked objects, {r['collect_ns']:.0f} ns per full collection, "
                f"{r['garbage']:.3f} objects of cyclic garbage"
            )
    args.charts.save()
    print(f"\nload average at the end: {load()}")


async def writers_table(
    args: argparse.Namespace, url: str, per_event: Factory, group: Factory
) -> None:
    # Appends/s depend on how much CPU the machine gives the process; CPU per
    # append does not, and 1e6 / it is what one fully busy core would sustain.
    print(f"\nappends, {args.seconds:g} s per cell")
    print(
        f"{'writers':>8} {'per-event/s':>12} {'group/s':>10} {'ratio':>7} "
        f"{'per-event CPU µs':>17} {'group CPU µs':>13} {'ratio':>7} "
        f"{'per core: per-event/s':>22} {'group/s':>10}"
    )
    for count in args.writers:
        before = await median_of(
            args.repeats, partial(writers, url, per_event, count, args.seconds)
        )
        after = await median_of(args.repeats, partial(writers, url, group, count, args.seconds))
        print(
            f"{count:8d} {before['rate']:12.0f} {after['rate']:10.0f} "
            f"{after['rate'] / before['rate']:6.1f}x {before['cpu_us']:17.1f} "
            f"{after['cpu_us']:13.1f} {before['cpu_us'] / after['cpu_us']:6.1f}x "
            f"{1e6 / before['cpu_us']:22.0f} {1e6 / after['cpu_us']:10.0f}"
        )


async def alone_table(
    args: argparse.Namespace, url: str, memory: Factory, per_event: Factory, group: Factory
) -> None:
    streams, rate, seconds = args.streams, 20.0, args.target_seconds
    print(
        f"\nthe write path alone: {streams} streams x {rate:g} tokens/s for {seconds:g} s, "
        "no readers"
    )
    print(f"{'':30} {'append p50 ms':>14} {'p99 ms':>8} {'CPU µs/token':>13} {'added':>7}")
    alone = []
    labels = ["floor: MemoryStore", "peer: one Lua call per event", "group commit"]
    for label, make in zip(labels, [memory, per_event, group], strict=True):
        r = await median_of(
            args.repeats, partial(target, url, make, streams, rate, seconds, readers=False)
        )
        alone.append(r)
        print(
            f"{label:30} {r['p50'] * 1e3:14.2f} {r['p99'] * 1e3:8.1f} {r['cpu_us']:13.1f} "
            f"{r['cpu_us'] - alone[0]['cpu_us']:7.1f}"
        )
    args.charts.table(
        f"the write path alone, {streams} streams: CPU per token",
        "CPU µs/token",
        {label: r["cpu_us"] for label, r in zip(labels, alone, strict=True)},
        ours="group commit",
        higher_is_better=False,
        words=("cheaper", "costlier"),
    )
    print(
        "group commit vs peer: CPU added per token "
        f"{(alone[1]['cpu_us'] - alone[0]['cpu_us']) / (alone[2]['cpu_us'] - alone[0]['cpu_us']):.1f}x"
        " lower"
    )


async def target_table(
    args: argparse.Namespace,
    url: str,
    memory: Factory,
    all_streams_read: Factory,
    no_hand_over: Factory,
    group: Factory,
    group_window: Factory,
) -> None:
    streams, rate, seconds = args.streams, 20.0, args.target_seconds
    print(
        f"\n{streams} streams x {rate:g} tokens/s for {seconds:g} s, each read through a Hub "
        f"(target: 100 % delivered, added per-token p99 <= 20 ms)"
    )
    print(
        f"{'':30} {'delivered':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/token':>13} "
        f"{'added by Redis':>15} {'full GCs':>9} {'longest GC ms':>14}"
    )
    rows = []
    designs = [
        ("floor: MemoryStore, no Redis", memory),
        ("before: hub XREADs all streams", all_streams_read),
        ("notifications, reads back own", no_hand_over),
        ("after: + own writes handed over", group),
        ("after, 2 ms append window", group_window),
    ]
    for label, make in designs:
        r = await median_of(args.repeats, partial(target, url, make, streams, rate, seconds))
        rows.append(r)
        added = r["cpu_us"] - rows[0]["cpu_us"]
        print(
            f"{label:30} {r['delivered']:9.1f}% {r['p50'] * 1e3:8.1f} {r['p99'] * 1e3:8.1f} "
            f"{r['cpu_us']:13.1f} {added if rows[1:] else 0:15.1f} {r['gc_full']:9.0f} "
            f"{r['gc_max_ms']:14.1f}"
        )
    args.charts.table(
        f"{streams} streams read through a Hub: per-token p99",
        "ms",
        {label: r["p99"] * 1e3 for (label, _), r in zip(designs, rows, strict=True)},
        ours="after: + own writes handed over",
        higher_is_better=False,
    )
    floor, before, after = rows[0], rows[1], rows[3]
    met = after["delivered"] == 100.0 and after["p99"] - floor["p99"] <= 0.020
    print(
        f"after vs before: p50 {before['p50'] / after['p50']:.1f}x, "
        f"p99 {before['p99'] / after['p99']:.1f}x lower; CPU added by Redis per token "
        f"{(before['cpu_us'] - floor['cpu_us']) / (after['cpu_us'] - floor['cpu_us']):.1f}x lower; "
        f"p99 over the floor {(after['p99'] - floor['p99']) * 1e3:+.1f} ms: "
        f"target {'met' if met else 'MISSED'}"
    )


def measure_apart(args: argparse.Namespace, url: str, what: str, design: str, **more: Any) -> Any:
    """One measurement in a process of its own, of this tree or (``tree``) another."""
    tree = more.pop("tree", None)
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.join(os.path.abspath(tree), "src"), env.get("PYTHONPATH", "")]
        )
    command = [sys.executable, os.path.abspath(__file__), "--one", what, "--design", design]
    command += ["--redis-url", url, "--streams", str(more.get("streams", args.streams))]
    command += ["--target-seconds", str(args.target_seconds)]
    command += ["--gc", args.gc, *(["--no-uvloop"] if args.no_uvloop else [])]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{what} {design} ({tree or 'this tree'}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def side_by_side(args: argparse.Namespace, url: str) -> None:
    """Parts 3 and 4, this tree beside ``--baseline``'s, each run in a fresh process."""
    base = args.baseline
    runs = [("floor: MemoryStore", "memory", None), ("baseline", "group", base)]
    runs.append(("this tree", "group", None))
    print(f"\nside by side with the baseline {base} (each figure a fresh process, interleaved)")
    if "kept" in args.parts:
        print(f"\nkept per event by a Hub, 200 streams x 200 events, median of {args.repeats}")
        print(
            f"{'':20} {'tracked objects':>16} {'full GC ns':>11} {'full GC ms':>11} "
            f"{'cyclic garbage':>15}"
        )
        for label, design, tree in runs[1:]:
            rs = [measure_apart(args, url, "kept", design, tree=tree) for _ in range(args.repeats)]
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            print(
                f"{label:20} {med['tracked']:16.2f} {med['collect_ns']:11.0f} "
                f"{med['full_ms']:11.1f} {med['garbage']:15.3f}"
            )
    for what, streams in [
        (what, streams)
        for what in ("target", "relay")
        if what in args.parts
        for streams in args.side_streams
    ]:
        results: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in runs}
        for _ in range(args.repeats):  # interleaved: drifting load hits all alike
            for label, design, tree in runs:
                results[label].append(
                    measure_apart(args, url, what, design, tree=tree, streams=streams)
                )
        med = {
            label: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            for label, rs in results.items()
        }
        floor = med["floor: MemoryStore"]
        how = "appended and read" if what == "target" else "relayed (appenders, taps)"
        print(
            f"\n{streams} streams x 20 tokens/s for {args.target_seconds:g} s, {how} "
            f"through a Hub, median of {args.repeats} (load average {load()})"
        )
        print(
            f"{'':20} {'delivered':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99 over floor':>15} "
            f"{'CPU µs/token':>13} {'full GCs':>9} {'longest GC ms':>14}"
        )
        for label, r in med.items():
            print(
                f"{label:20} {r['delivered']:9.1f}% {r['p50'] * 1e3:8.1f} {r['p99'] * 1e3:8.1f} "
                f"{(r['p99'] - floor['p99']) * 1e3:+15.1f} {r['cpu_us']:13.1f} "
                f"{r['gc_full']:9.0f} {r['gc_max_ms']:14.1f}"
            )
        ours, before = med["this tree"], med["baseline"]
        met = ours["delivered"] == 100.0 and ours["p99"] - floor["p99"] <= 0.020
        print(
            f"baseline / this tree: p99 {before['p99'] / ours['p99']:.2f}x, longest collection "
            f"{before['gc_max_ms'] / max(ours['gc_max_ms'], 0.1):.1f}x, CPU per token "
            f"{before['cpu_us'] / ours['cpu_us']:.2f}x; target (100 % delivered, "
            f"p99 <= floor + 20 ms) {'met' if met else 'MISSED'}"
        )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 30 s)")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--seconds", type=float, default=3.0, help="per writers cell")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--target-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["writers", "alone", "target", "relay", "kept"],
        default=["writers", "alone", "target"],
        help="which tables to run",
    )
    parser.add_argument(
        "--baseline",
        default="",
        metavar="TREE",
        help="run parts target and kept beside another ssegate source tree's (TREE/src)",
    )
    parser.add_argument("--side-streams", type=int, nargs="+", default=[100, 1000])
    parser.add_argument(
        "--gc",
        choices=["gateway", "default"],
        default="gateway",
        help="with --baseline: the collector as `ssegate serve` sets it (start-up objects "
        "frozen, its thresholds; the default) or Python's defaults",
    )
    parser.add_argument("--one", choices=["target", "relay", "kept"], help=argparse.SUPPRESS)
    parser.add_argument("--design", choices=["memory", "group"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.target_seconds, args.repeats = 1.0, 3.0, 1
    run_with_redis(main, args)


if __name__ == "__main__":
    cli()
