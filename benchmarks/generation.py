"""The generation's side alone: upstream bytes in, records appended, no readers, no HTTP server.

    .venv/bin/python benchmarks/generation.py                       # 1 000 streams, once
    .venv/bin/python benchmarks/generation.py --baseline TREE --repeats 5
    .venv/bin/python benchmarks/generation.py --streams 20 --calls --census

What ``benchmarks/gateway.py``'s CPU per relayed token holds of the generation's
side, measured apart from the readers' side: the fake OpenAI-compatible
upstream (``fake_upstream.py``, its own process, keep-alive on, HTTPS unless
``--no-tls``) streams ``--tokens`` tokens at 20 tokens/s to each of
``--streams`` generations that the gateway's ``Runner`` runs in this process
(``OpenAIProvider`` over its ``HTTPClient``, aiohttp) into a ``MemoryStore``
with no reader: aiohttp's body read, the SSE decoding, the provider's chunk to
events, ``Runner._produce`` and ``append`` (into the memory store the body is
pushed from aiohttp's ``data_received``, ``HTTPProvider.stream_into``; a
baseline tree may still read it in the producer's task, ``stream_batches``). The collector
is set as ``ssegate serve`` sets it (start-up objects frozen, its thresholds,
``pace_collections``). Once every stream has its first token, the process's
CPU (user + system) over ``--window`` seconds is divided by the tokens
appended meanwhile; the collector's own time in that window is given apart.

On a shared machine CPU per token moves with the other load (two hyperthreads
share a core's time): ``--baseline TREE`` runs TREE/src's at the same time,
each with its own upstream, ``--repeats`` times; compare the pairs of one run.
Two figures do not move with the load when each read brings one token (a few
streams, ``--streams 20``): ``--calls``, the Python calls (resumptions
included) and C calls per token, and ``--census``, the objects the collector
tracks per stream made since the last collection (what each young collection
walks, and promotes while the streams wait), by type.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import multiprocessing
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from fake_upstream import make_certificate, run_upstream  # benchmarks/ is on sys.path

HERE = os.path.abspath(__file__)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _census(streams: int) -> list[str]:
    """The tracked objects made in a quarter of a second and alive at its end, per stream."""
    gc.disable()
    gc.collect()
    gc.freeze()
    try:
        await asyncio.sleep(0.25)
        kinds = collections.Counter(type(o).__qualname__ for o in gc.get_objects(0))
    finally:
        gc.unfreeze()
        gc.enable()
    total = sum(kinds.values()) / streams
    lines = [f"census: {total:.1f} young tracked objects per stream"]
    lines += [f"  {n / streams:6.2f} {kind}" for kind, n in kinds.most_common(12)]
    return lines


async def _calls(gens: list[Any]) -> list[str]:
    """Python calls (resumptions included) and C calls per token over one second."""
    counts: collections.Counter[str] = collections.Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:
        counts[event] += 1

    before = sum(g.tokens for g in gens)
    sys.setprofile(profile)
    try:
        await asyncio.sleep(1.0)
    finally:
        sys.setprofile(None)
    tokens = max(1, sum(g.tokens for g in gens) - before)
    return [
        f"calls per token: Python {counts['call'] / tokens:.1f}, "
        f"C {counts['c_call'] / tokens:.1f} ({tokens} tokens)"
    ]


async def _run(args: argparse.Namespace, url: str) -> str:
    from ssegate.cli._serve import GC_THRESHOLDS
    from ssegate.gateway._metrics import Metrics
    from ssegate.gateway._models import Route
    from ssegate.gateway._runner import Runner
    from ssegate.llm import ChatRequest
    from ssegate.llm.providers import create_provider
    from ssegate.server import freeze_startup_objects, pace_collections
    from ssegate.streams import MemoryStore

    provider = create_provider("openai", base_url=url, api_key="k")
    route = Route("m", provider, "m")
    messages = [{"role": "user", "content": "hi"}]
    out: list[str] = []
    async with Runner(MemoryStore(), Metrics()) as runner:
        warm = ChatRequest(model="m", messages=messages, max_tokens=3)
        for generation in [await runner.start(f"w{i}", route, warm, key_id="k") for i in range(5)]:
            await generation.finished.wait()
        freeze_startup_objects()
        gc.set_threshold(*GC_THRESHOLDS)
        pacer = asyncio.get_running_loop().create_task(pace_collections())
        request = ChatRequest(model="m", messages=messages, max_tokens=args.tokens)
        gens = []
        for i in range(args.streams):
            gens.append(await runner.start(f"s{i}", route, request, key_id=f"k{i}"))
            await asyncio.sleep(args.ramp / args.streams)
        for generation in gens:  # every stream answered (its first read)
            await generation.accepted.wait()
        await asyncio.sleep(0.5)
        collected = [0.0]
        began = [0.0]

        def timed(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                began[0] = time.perf_counter()
            else:
                collected[0] += time.perf_counter() - began[0]

        gc.callbacks.append(timed)
        t0, c0, n0 = time.monotonic(), _cpu(), sum(g.tokens for g in gens)
        await asyncio.sleep(args.window)
        t1, c1, n1 = time.monotonic(), _cpu(), sum(g.tokens for g in gens)
        gc.callbacks.remove(timed)
        ended = sum(g.finished.is_set() for g in gens)
        if args.calls:
            out += await _calls(gens)
        if args.census:
            pacer.cancel()
            out += await _census(args.streams)
        for generation in gens:
            await generation.finished.wait()
        pacer.cancel()
        tokens = max(1, n1 - n0)
        short = sorted({g.end_reason for g in gens} - {"stop"})
        out.insert(
            0,
            f"{args.label}: {args.streams} streams, {tokens} tokens in {t1 - t0:.1f} s: "
            f"CPU {1e6 * (c1 - c0) / tokens:.1f} us/token ({100 * (c1 - c0) / (t1 - t0):.0f}% "
            f"of a core), the collector {1e6 * collected[0] / tokens:.2f} us/token"
            + (f"; {ended} streams ended inside the window: make --tokens longer" if ended else "")
            + (f"; ended otherwise: {short}" if short else ""),
        )
    await provider.aclose()
    return "\n".join(out)


def _one(args: argparse.Namespace) -> None:
    """One measurement in this process (its own upstream)."""
    port = _free_port()
    certdir = tempfile.mkdtemp(prefix="ssegate-generation-")
    if args.tls:
        os.environ["SSL_CERT_FILE"] = make_certificate(certdir)
    upstream = multiprocessing.get_context("spawn").Process(
        target=run_upstream,
        args=(port, args.tokens, certdir if args.tls else "", True),
        daemon=True,
    )
    upstream.start()
    try:
        time.sleep(1.0)  # the upstream listening
        import uvloop

        scheme = "https" if args.tls else "http"
        print(uvloop.run(_run(args, f"{scheme}://127.0.0.1:{port}/v1")), flush=True)
    finally:
        upstream.kill()


_FIGURE = re.compile(r"^(\S+): .* CPU ([\d.]+) us/token")


def _side_by_side(args: argparse.Namespace, argv: list[str]) -> None:
    """This tree's and ``--baseline``'s at the same time, ``--repeats`` times."""
    rest = [a for a in argv if not a.startswith("--baseline") and a != args.baseline]
    figures: dict[str, list[float]] = collections.defaultdict(list)
    ratios = []
    for _ in range(args.repeats):
        runs = {}
        for label, src in (("this", None), ("baseline", os.path.join(args.baseline, "src"))):
            env = dict(os.environ, **({"PYTHONPATH": src} if src else {}))
            runs[label] = subprocess.Popen(
                [sys.executable, HERE, *rest, "--repeats", "1", "--label", label],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
        got = {}
        for label, proc in runs.items():
            text, _ = proc.communicate()
            print(text.rstrip(), flush=True)
            found = _FIGURE.match(text.splitlines()[0]) if text.strip() else None
            if found and "ended inside" not in text.splitlines()[0]:
                got[label] = float(found[2])
                figures[label].append(float(found[2]))
        if len(got) == 2:
            ratios.append(got["this"] / got["baseline"])
    for label, values in figures.items():
        print(f"{label}: median {statistics.median(values):.1f} us/token of {sorted(values)}")
    if ratios:
        print(
            f"this / baseline, pair by pair: {[round(r, 2) for r in ratios]}, "
            f"median {statistics.median(ratios):.2f}x; load average {os.getloadavg()[0]:.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=400, help="per stream (20 a second)")
    ap.add_argument("--ramp", type=float, default=1.0, help="seconds to start the streams")
    ap.add_argument("--window", type=float, default=6.0, help="seconds measured")
    ap.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--calls", action="store_true", help="count calls per token too")
    ap.add_argument("--census", action="store_true", help="count young tracked objects too")
    ap.add_argument("--baseline", default=None, help="a source tree to run beside, at once")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--label", default="ssegate", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline:
        _side_by_side(args, sys.argv[1:])
    else:
        for _ in range(args.repeats):
            _one(args)


if __name__ == "__main__":
    main()
