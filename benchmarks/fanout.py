"""Fan-out benchmark: one publisher, many subscribers in one process.

    .venv/bin/python benchmarks/fanout.py [--quick] [--subscribers N] [--redis-url URL]

Measures, all in one run:

1. Delivery latency (publish -> subscriber got it) p50/p99 with 10 000 subscribers
   on one stream at 10 events/s, through a ``Hub`` over the memory store and over
   Redis, and for a hand-rolled peer: one unbounded ``asyncio.Queue`` per
   subscriber, the broadcast people write when their SSE library has none
   (sse-starlette#81). Also RSS per subscriber. One more row, for information,
   freezes the heap (``gc.freeze()``) once the subscribers have joined: what is
   left of the p99 above that row is full garbage collections walking the
   10 000 subscribers' objects, a knob of the application, not of the hub.
2. Redis connections the process opens: Hub at 100 and at N subscribers, and
   the peer without a hub (each reader blocking in its own XREAD) at 200.
3. Append and history-read throughput of both stores.

Figures are medians of several repeats. The machine is shared and noisy: read
the ratios, not the absolute numbers (the load average is printed before and
after).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import psutil
import redis.asyncio as aioredis
from _report import Report
from redis.asyncio import BlockingConnectionPool

from ssegate import Event
from ssegate.streams import End, Hub, MemoryStore, StreamStore
from ssegate.streams.redis import RedisStore
from ssegate.testing._redis import redis_url

RATE = 10.0  # events per second
PROCESS = psutil.Process()


def rss() -> int:
    gc.collect()
    return int(PROCESS.memory_info().rss)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_until(check: Callable[[], bool], limit: float = 120.0) -> None:
    for _ in range(int(limit / 0.02)):
        if check():
            return
        await anyio.sleep(0.02)
    raise TimeoutError("the subscribers did not join in time")


async def hub_latency(
    make_store: Callable[[], StreamStore], subscribers: int, events: int, freeze: bool = False
) -> dict[str, float]:
    latencies: list[float] = []
    async with make_store() as store, Hub(store, queue_size=4096) as hub:
        done = 0

        warm = 0

        async def subscribe() -> None:
            nonlocal done, warm
            async for item in hub.read("bench", missing_ok=True):
                if isinstance(item, Event):
                    if item.data == "warm-up":
                        warm += 1
                    else:
                        latencies.append(time.perf_counter() - float(item.data))
                elif isinstance(item, End):
                    break
            done += 1

        before = rss()
        async with anyio.create_task_group() as tg:
            for _ in range(subscribers):
                tg.start_soon(subscribe)
            await wait_until(lambda: hub.subscribers == subscribers)
            # Measure steady state: every subscriber has replayed and follows live.
            await store.append("bench", Event("warm-up"))
            await wait_until(lambda: warm == subscribers)
            await anyio.sleep(0.2)
            per_subscriber = (rss() - before) / subscribers
            if freeze:
                gc.freeze()
            try:
                for _ in range(events):
                    await store.append("bench", Event(repr(time.perf_counter())))
                    await anyio.sleep(1 / RATE)
            finally:
                gc.unfreeze()
            await store.end("bench")
        if isinstance(store, RedisStore):
            await store.redis.delete(*store._keys("bench"))
        if done != subscribers or len(latencies) != subscribers * events:
            raise RuntimeError(f"lost deliveries: {len(latencies)} of {subscribers * events}")
    return {"p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99), "rss": per_subscriber}


async def queue_peer_latency(subscribers: int, events: int) -> dict[str, float]:
    """The hand-rolled broadcast: a list of unbounded asyncio.Queues."""
    latencies: list[float] = []
    queues: list[asyncio.Queue[float | None]] = []

    async def subscribe() -> None:
        queue: asyncio.Queue[float | None] = asyncio.Queue()
        queues.append(queue)
        while (sent := await queue.get()) is not None:
            latencies.append(time.perf_counter() - sent)

    before = rss()
    async with anyio.create_task_group() as tg:
        for _ in range(subscribers):
            tg.start_soon(subscribe)
        await wait_until(lambda: len(queues) == subscribers)
        await anyio.sleep(0.2)
        per_subscriber = (rss() - before) / subscribers
        for _ in range(events):
            now = time.perf_counter()
            for queue in queues:
                queue.put_nowait(now)
            await anyio.sleep(1 / RATE)
        for queue in queues:
            queue.put_nowait(None)
    return {"p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99), "rss": per_subscriber}


async def redis_connections(url: str, subscribers: int, *, hub: bool) -> int:
    """Connections one process holds while ``subscribers`` follow 10 streams."""
    name = f"ssegate-bench-{uuid.uuid4().hex[:8]}"
    limit = 32 if hub else subscribers + 10
    pool = BlockingConnectionPool.from_url(url, max_connections=limit, client_name=name, timeout=60)
    client = aioredis.Redis(connection_pool=pool)
    admin = aioredis.Redis.from_url(url)
    store = RedisStore(client, prefix=f"ssegate-bench:{uuid.uuid4().hex[:8]}:", poll_interval=1.0)
    joined = 0
    try:
        async with Hub(store) as the_hub:
            read = the_hub.read if hub else store.read

            async def subscribe(stream: str) -> None:
                nonlocal joined
                items = read(stream, missing_ok=True)
                joined += 1
                async for item in items:
                    if isinstance(item, End):
                        break

            async with anyio.create_task_group() as tg:
                for n in range(subscribers):
                    tg.start_soon(subscribe, f"s{n % 10}")
                await wait_until(lambda: joined == subscribers)
                for s in range(10):
                    await store.append(f"s{s}", Event("x"))
                await anyio.sleep(1.5)  # every reader is now blocked in (or behind) XREAD
                count = sum(1 for c in await admin.client_list() if c.get("name") == name)
                for s in range(10):
                    await store.end(f"s{s}")
        return count
    finally:
        keys = [k async for k in admin.scan_iter(match=store.prefix + "*")]
        if keys:
            await admin.delete(*keys)
        await client.aclose(close_connection_pool=True)
        await admin.aclose()


async def throughput(make_store: Callable[[], StreamStore], n: int) -> dict[str, float]:
    async with make_store() as store:
        started = time.perf_counter()
        for i in range(n):
            await store.append("tp", Event(f"token {i}", event="token"))
        append = n / (time.perf_counter() - started)
        await store.end("tp")
        started = time.perf_counter()
        count = 0
        async for item in store.read("tp"):
            count += isinstance(item, Event)
        read = count / (time.perf_counter() - started)
        if isinstance(store, RedisStore):
            await store.redis.delete(*store._keys("tp"))
    return {"append": append, "read": read}


async def median_of(
    repeats: int, run: Callable[[], Awaitable[dict[str, float]]]
) -> dict[str, float]:
    results = [await run() for _ in range(repeats)]
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


async def main(args: argparse.Namespace) -> None:
    n, events, repeats = args.subscribers, args.events, args.repeats
    url = args.redis_url

    def memory() -> StreamStore:
        return MemoryStore()

    def redis_store() -> StreamStore:
        return RedisStore(url, prefix=f"ssegate-bench:{uuid.uuid4().hex[:8]}:")

    print(
        f"fan-out: {n} subscribers, one stream, {events} events at {RATE:g}/s, "
        f"median of {repeats} (loop: {args.loop}; shared noisy 2-core machine, "
        f"load average {load()})\n"
    )
    rows: list[tuple[str, dict[str, float]]] = []
    # The gc.freeze() row runs last: unfreezing hands the next run a big old
    # generation to collect, which would weigh on whatever came after it.
    for label, run in [
        ("Hub + MemoryStore", lambda: hub_latency(memory, n, events)),
        ("Hub + RedisStore", lambda: hub_latency(redis_store, n, events)),
        ("peer: asyncio.Queue per subscriber", lambda: queue_peer_latency(n, events)),
        ("Hub + MemoryStore, gc.freeze() (info)", lambda: hub_latency(memory, n, events, True)),
    ]:
        rows.append((label, await median_of(repeats, run)))
    peer = rows[2][1]
    print(f"{'':38} {'p50 ms':>9} {'p99 ms':>9} {'p99 / peer':>11} {'RSS/sub KiB':>12}")
    for label, r in rows:
        print(
            f"{label:38} {r['p50'] * 1e3:9.1f} {r['p99'] * 1e3:9.1f} "
            f"{r['p99'] / peer['p99']:10.2f}x {r['rss'] / 1024:12.1f}"
        )
    charts = Report("fanout", f"One stream fanned out to {n} subscribers in one process.")
    charts.table(
        f"{n} subscribers: delivery latency p99",
        "ms",
        {label: r["p99"] * 1e3 for label, r in rows},
        ours="Hub + MemoryStore",
        higher_is_better=False,
    )
    target = "met" if max(r["p99"] for _, r in rows[:2]) <= 0.25 else "MISSED"
    print(f"target p99 <= 250 ms with {n} subscribers: {target}\n")

    small = 100
    hub_small = await redis_connections(url, small, hub=True)
    hub_big = await redis_connections(url, n, hub=True)
    naive_n = min(200, n)
    naive = await redis_connections(url, naive_n, hub=False)
    print("Redis connections held by the process (10 streams):")
    print(f"  Hub, {small:>5} subscribers: {hub_small}")
    # A hub needs one connection for its XREAD, one to wake it, up to
    # max_replays (4) for joining subscribers' history, and the benchmark's own.
    bound = 1 + 1 + 4 + 2
    print(
        f"  Hub, {n:>5} subscribers: {hub_big}   (bounded by {bound} whatever the "
        f"subscribers: {'yes' if max(hub_small, hub_big) <= bound else 'NO'})"
    )
    print(
        f"  peer: store.read() without a hub, {naive_n} subscribers: {naive}  "
        f"({naive / max(hub_big, 1):.0f}x the hub's)\n"
    )

    count = args.throughput
    mem = await median_of(repeats, lambda: throughput(memory, count))
    red = await median_of(repeats, lambda: throughput(redis_store, count))
    print(f"throughput, {count} events, events/s   {'append':>10} {'history read':>13}")
    print(f"  MemoryStore                         {mem['append']:10.0f} {mem['read']:13.0f}")
    print(f"  RedisStore                          {red['append']:10.0f} {red['read']:13.0f}")
    print(
        f"  memory / redis                      {mem['append'] / red['append']:9.1f}x "
        f"{mem['read'] / red['read']:12.1f}x"
    )
    charts.table(
        "Redis connections held (10 streams)",
        "connections",
        {f"Hub, {n} subscribers": hub_big, f"peer: no hub, {naive_n} subscribers": naive},
        ours=f"Hub, {n} subscribers",
        higher_is_better=False,
        words=("fewer", "more"),
    )
    charts.save()
    print(f"\nload average at the end: {load()}")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (1000 subscribers)")
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--throughput", type=int, default=5000)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.events, args.repeats, args.throughput = 1000, 10, 1, 1000
    run_with_redis(main, args)


def run_with_redis(main: Callable[[argparse.Namespace], Awaitable[None]], args: Any) -> None:
    """Run ``main(args)`` on uvloop (unless ``args.no_uvloop``), with a Redis at ``args.redis_url``.

    The Redis is ``--redis-url``, else $REDIS_URL, else 127.0.0.1:6379, else one of our own.
    """
    options: dict[str, Any] = {}
    args.loop = "asyncio"
    if not args.no_uvloop:
        try:
            import uvloop  # noqa: F401

            options["use_uvloop"] = True
            args.loop = "uvloop"
        except ImportError:
            pass
    with redis_url() as url:
        args.redis_url = args.redis_url or url
        anyio.run(main, args, backend_options=options)


if __name__ == "__main__":
    cli()
