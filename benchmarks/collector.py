"""The collector's pauses in a gateway whose streams end as others start.

    .venv/bin/python benchmarks/collector.py            # 10 000 streams x 0.5 tokens/s, 30 each
    .venv/bin/python benchmarks/collector.py --quick    # 2 000 streams, once

N ``echo`` generations run by the gateway's ``Runner`` into a ``MemoryStore``, each
read by one ``Hub`` subscriber, started over ``--ramp`` seconds; each slot starts
a new generation as soon as its last one ends (the soak's churn, without HTTP),
so once they all run, streams end and start at a steady rate. Start-up objects
are frozen as ``ssegate serve`` freezes them; then, in a process of its own each,
the collector as set by:

- ``thresholds``: main's ``serve`` before the clock, ``(2 000, 10, 2 500)`` alone;
- ``paced``: this tree's ``serve``, its ``GC_THRESHOLDS`` and
  ``ssegate.server.pace_collections()`` (young every 0.1 s, middle every 0.2 s);
- ``paced, middle every 1 s``: the clock with the middle generation every 10th tick.

Every collection is timed with ``gc.callbacks`` in CPU time (``process_time``: on
a shared machine wall time counts the waits for a core too). Reported, medians of
``--repeats``: the collector's CPU per delivered item and its share of the time;
the longest young and middle collection; and "pause p99": the length of the
pauses in which 1 % of the measured time was spent, longest first: tokens due in
a pause are late by up to its length, so it is what the collector adds to the
lateness p99.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from echo_streams import echo_slots  # benchmarks/ is on sys.path

from ssegate.server._gc import PACE_MIDDLE_EVERY

#: Each setting: its thresholds (``None``: this tree's serve's) and every how many
#: ticks of the clock the middle generation is collected (``None``: no clock).
SETTINGS: dict[str, tuple[tuple[int, int, int] | None, int | None]] = {
    "thresholds": ((2_000, 10, 2_500), None),
    "paced": (None, PACE_MIDDLE_EVERY),
    "paced, middle every 1 s": (None, 10),
}


def pause_p99(pauses: list[float], seconds: float) -> float:
    """The pause length at which the longest pauses add up to 1 % of ``seconds``."""
    spent = 0.0
    for pause in sorted(pauses, reverse=True):
        spent += pause
        if spent >= 0.01 * seconds:
            return pause
    return 0.0


def measure(
    setting: str, streams: int, pace: float, tokens: int, ramp: float, seconds: float
) -> dict[str, Any]:
    import asyncio
    import gc

    import anyio
    import uvloop

    from ssegate.cli._serve import GC_THRESHOLDS
    from ssegate.server import pace_collections

    thresholds, middle_every = SETTINGS[setting]
    pauses: list[tuple[int, float]] = []  # (generation, CPU seconds)
    began = [0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.process_time()
        else:
            pauses.append((info["generation"], time.process_time() - began[0]))

    gc.collect()
    gc.freeze()
    gc.set_threshold(*(thresholds or GC_THRESHOLDS))
    gc.callbacks.append(timed)

    async def main() -> dict[str, Any]:
        pacing = None
        if middle_every is not None:
            pacing = asyncio.get_running_loop().create_task(
                pace_collections(middle_every=middle_every)
            )
        async with echo_slots(streams, pace, tokens, ramp, restart=True) as received:
            await anyio.sleep(ramp + 2)
            del pauses[:]
            before = time.process_time(), received[0], time.monotonic()
            await anyio.sleep(seconds)
            after = time.process_time(), received[0], time.monotonic()
            seen = list(pauses)
        if pacing is not None:
            pacing.cancel()
        wall = after[2] - before[2]
        items = after[1] - before[1]
        cpu = [pause for _, pause in seen]
        return {
            "items_per_s": items / wall,
            "gc_us": sum(cpu) / max(items, 1) * 1e6,
            "gc_share": sum(cpu) / wall,
            "young_ms": max((p for g, p in seen if g == 0), default=0.0) * 1e3,
            "middle_ms": max((p for g, p in seen if g == 1), default=0.0) * 1e3,
            "full": sum(1 for g, _ in seen if g == 2),
            "p99_ms": pause_p99(cpu, wall) * 1e3,
        }

    return uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--pace", type=float, default=0.5, help="tokens/s per stream")
    parser.add_argument("--tokens", type=int, default=30, help="tokens per generation")
    parser.add_argument("--ramp", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=40.0, help="measured, after the ramp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 000 streams, once")
    parser.add_argument("--child", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.streams, args.ramp, args.seconds, args.repeats = 2_000, 10.0, 10.0, 1
    options = (args.streams, args.pace, args.tokens, args.ramp, args.seconds)
    if args.child:
        print(json.dumps(measure(args.child, *options)))
        return
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"collector: {args.streams} echo streams x {args.pace} tokens/s, {args.tokens} tokens "
        f"each (each slot restarts), ramp {args.ramp:.0f} s, {args.seconds:.0f} s measured; "
        f"CPU time per collection; load average {load}"
    )
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):
        for name in SETTINGS:
            child = [sys.executable, __file__, f"--child={name}", *sys.argv[1:]]
            child += [f"--{k}={v}" for k, v in (("streams", args.streams), ("ramp", args.ramp))]
            child += [f"--seconds={args.seconds}"]
            out = subprocess.run(child, capture_output=True, text=True, check=True)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"{'collector':26s} {'pause p99':>10s} {'young max':>10s} {'middle max':>11s} "
        f"{'full':>5s} {'CPU/item':>9s} {'share':>6s} {'items/s':>8s}"
    )
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        p99 = f"{med['p99_ms']:8.1f}ms" if med["p99_ms"] else "    (<1 %)"
        print(
            f"{name:26s} {p99} {med['young_ms']:8.1f}ms {med['middle_ms']:9.1f}ms "
            f"{med['full']:5.0f} {med['gc_us']:7.1f}µs {med['gc_share']:6.1%} "
            f"{med['items_per_s']:8.0f}"
        )
    paced = statistics.median(r["p99_ms"] for r in results["paced"])
    alone = statistics.median(r["p99_ms"] for r in results["thresholds"])
    if paced > 0 and alone > 0:
        print(f"ratio      pause p99 paced / thresholds alone: {paced / alone:.2f}x")
    print(
        f"machine    load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"(medians of {args.repeats})"
    )


if __name__ == "__main__":
    main()
