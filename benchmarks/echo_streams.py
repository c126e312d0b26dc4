"""Echo streams in one process: the gateway's producing and fan-out path, no HTTP.

    .venv/bin/python benchmarks/echo_streams.py                    # 10 000 streams x 0.5 tokens/s
    .venv/bin/python benchmarks/echo_streams.py --baseline TREE    # and TREE/src's, side by side
    .venv/bin/python benchmarks/echo_streams.py --quick            # 1 000 streams, once

What the soak (benchmarks/soak.py) drives through HTTP, without the HTTP: N
generations of the ``echo`` model run by the gateway's ``Runner`` (each with its
lease) into a ``MemoryStore``, each read by one subscriber of a ``Hub``, started
over ``--ramp`` seconds. Measured once they all run: CPU (user + system) per
item delivered to a subscriber, the collector's share of it and its longest
pause. The collector is set as the tree's ``ssegate serve`` sets it (start-up
objects frozen, its ``GC_THRESHOLDS``) unless ``--default-gc``.
``--baseline TREE`` runs the same in a child process importing TREE/src (e.g. a
``git archive main src`` of the main branch), alternating with this tree's,
``--repeats`` times: compare the medians of one run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over ``runs`` (one tree's)."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def baseline_ratio(results: dict[str, list[dict[str, float]]], key: str) -> float:
    """This tree's median of ``key`` over the baseline's (both in ``results``)."""
    return medians(results["this tree"])[key] / medians(results["baseline"])[key]


@asynccontextmanager
async def echo_slots(
    streams: int, pace: float, tokens: int, ramp: float, *, restart: bool
) -> AsyncIterator[list[int]]:
    """``streams`` slots, started over ``ramp`` seconds, each an ``echo`` generation of
    ``tokens`` at ``pace`` run by the gateway's ``Runner`` into a ``MemoryStore`` and
    read by one ``Hub`` subscriber (``restart``: a new one as each ends). Yields the
    count of items delivered so far (one-item list); leaving stops them all."""
    import anyio

    from ssegate.gateway._echo import EchoProvider
    from ssegate.gateway._metrics import Metrics
    from ssegate.gateway._models import Route
    from ssegate.gateway._runner import Runner
    from ssegate.llm import ChatRequest
    from ssegate.streams import End, Hub, MemoryStore

    request = ChatRequest(
        model="echo", messages=[{"role": "user", "content": "go"}], max_tokens=tokens
    )
    route = Route("echo", EchoProvider(tokens_per_second=pace), "echo")
    received = [0]
    store = MemoryStore(ttl=30)
    async with Hub(store) as hub, Runner(store, Metrics(), grace=60) as runner:

        async def slot(n: int) -> None:
            await anyio.sleep(n * ramp / streams)
            for generation in range(1_000_000 if restart else 1):
                name = f"gen_{n:06d}_{generation:06d}"
                await runner.start(name, route, request, key_id="k")
                runner.attach(name)
                async for item in hub.read(name):
                    if type(item) is End:
                        break
                    received[0] += 1

        async with anyio.create_task_group() as tg:
            for n in range(streams):
                tg.start_soon(slot, n)
            yield received
            tg.cancel_scope.cancel()


def measure(streams: int, pace: float, seconds: float, ramp: float, default_gc: bool) -> dict:
    import anyio
    import uvloop

    from ssegate.cli._serve import GC_THRESHOLDS

    # CPU seconds in the collector; when the current one began (CPU, wall); the longest (wall)
    collecting = [0.0, 0.0, 0.0, 0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collecting[1], collecting[2] = time.process_time(), time.perf_counter()
        else:
            collecting[0] += time.process_time() - collecting[1]
            collecting[3] = max(collecting[3], time.perf_counter() - collecting[2])

    gc.callbacks.append(timed)
    if not default_gc:  # as the tree's serve sets it
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
    tokens = int(pace * (ramp + seconds)) + 4  # still running when the measure ends

    async def main() -> dict:
        async with echo_slots(streams, pace, tokens, ramp, restart=False) as received:
            await anyio.sleep(ramp + 2)
            collecting[3] = 0.0  # the longest collection once they all run
            before = time.process_time(), collecting[0], received[0], time.monotonic()
            await anyio.sleep(seconds)
            after = time.process_time(), collecting[0], received[0], time.monotonic()
        items = after[2] - before[2]
        return {
            "items_per_s": items / (after[3] - before[3]),
            "cpu_us": (after[0] - before[0]) / max(items, 1) * 1e6,
            "gc_us": (after[1] - before[1]) / max(items, 1) * 1e6,
            "core": (after[0] - before[0]) / (after[3] - before[3]),
            "gc_longest_ms": collecting[3] * 1e3,
        }

    return uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--pace", type=float, default=0.5, help="tokens/s per stream")
    parser.add_argument("--seconds", type=float, default=16.0, help="measured, after the ramp")
    parser.add_argument("--ramp", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--default-gc", action="store_true", help="CPython's collector settings")
    parser.add_argument("--baseline", help="another source tree, run from TREE/src")
    parser.add_argument("--quick", action="store_true", help="1 000 streams, 6 s, once")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.streams, args.seconds, args.ramp, args.repeats = 1000, 6.0, 2.0, 1
    options = (args.streams, args.pace, args.seconds, args.ramp, args.default_gc)
    if args.child:
        print(json.dumps(measure(*options)))
        return
    trees = {"this tree": None}
    if args.baseline:
        trees["baseline"] = os.path.join(os.path.abspath(args.baseline), "src")
        if not os.path.isdir(os.path.join(trees["baseline"], "ssegate")):
            # Else the child imports this venv's ssegate: this tree, measured twice.
            parser.error(f"--baseline {args.baseline}: no src/ssegate there")
    print(
        f"echo streams: {args.streams} x {args.pace} tokens/s, ramp {args.ramp:.0f} s, "
        f"{args.seconds:.0f} s measured, {'default' if args.default_gc else 'serve'} gc; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    results: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, src in trees.items():
            env = {**os.environ, "PYTHONPATH": src} if src else dict(os.environ)
            child = [sys.executable, __file__, "--child", *sys.argv[1:]]
            child += [
                f"--{k}={v}"
                for k, v in (
                    ("streams", args.streams),
                    ("seconds", args.seconds),
                    ("ramp", args.ramp),
                )
            ]
            out = subprocess.run(child, env=env, capture_output=True, text=True, check=True)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for name, runs in results.items():
        med = medians(runs)
        print(
            f"{name:10s} {med['cpu_us']:6.1f} µs CPU per item (collector {med['gc_us']:.1f}, "
            f"longest collection {med['gc_longest_ms']:.0f} ms), "
            f"{med['items_per_s']:.0f} items/s, {med['core']:.0%} of a core "
            f"(medians of {len(runs)})"
        )
    if args.baseline:
        ratio = baseline_ratio(results, "cpu_us")
        print(f"ratio      {ratio:.2f} x the baseline's CPU per item")
    print(f"machine    load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
