"""The per-token chain of a relayed stream in one process, without sockets: its CPU and its work.

    .venv/bin/python benchmarks/chain.py                          # 1 000 streams, 40 tokens each
    .venv/bin/python benchmarks/chain.py --baseline TREE --repeats 5
    .venv/bin/python benchmarks/chain.py --streams 100 --tokens 20 --bytecodes

What ``benchmarks/gateway.py``'s CPU per relayed token holds of ssegate's own
Python, without the kernel, TLS, aiohttp's and uvicorn's parsers (measured
there): each of ``--streams`` generations is fed its upstream's text chunks
(``data: {...}\\n\\n``, one token each, the stream's frame learned) at the
connection's callback (``drive_into``'s ``_Feed``: the OpenAI chunk parser,
``Relay.take``, the memory store's appender), and read by one reader each
(``serve_generation``'s ``Renderer`` through ``stream_response`` over the
process's ``Hub``, its session taking the events on the push path) that
writes to uvicorn's request cycle of a transport that only counts (the
response's body written straight, ``server._direct``). One round feeds every
stream one token, then lets the loop turn once (the flusher writes); the
young generation is collected every other round and the middle one every
fourth (``serve``'s pacing, 0.1 s and 0.2 s at 20 tokens/s).

On a shared machine the CPU moves with the other load: ``--baseline TREE``
alternates runs of TREE/src's with this tree's, ``--repeats`` pairs; compare
the pairs. Two figures that do not move with the load: ``--bytecodes``, the
Python bytecodes executed per token, per function (a trace: slow), and
instructions per token under ``valgrind --tool=callgrind`` (the difference of
two runs of different lengths; not done here).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import logging
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.abspath(__file__)

#: A text chunk as OpenAI writes one, the content's string in the middle.
HEAD = (
    b'data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"m","choices":[{"index":0,"delta":'
)
TAIL = b',"logprobs":null,"finish_reason":null}]}\n\n'
ROLE = HEAD + b'{"role":"assistant","content":""}' + TAIL


def text_chunk(n: int) -> bytes:
    return HEAD + b'{"content":"token %d "}' % n + TAIL


class CountingTransport:
    """What uvicorn's request cycle writes to: counted, not sent."""

    __slots__ = ("bytes", "writes")

    def __init__(self) -> None:
        self.writes = 0
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.bytes += len(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def _run(args: argparse.Namespace) -> str:
    from starlette.requests import Request
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    from ssegate.gateway._metrics import Metrics
    from ssegate.gateway._reading import Renderer
    from ssegate.gateway._relay import Relay
    from ssegate.gateway._runner import Generation
    from ssegate.llm._drive import _Feed
    from ssegate.llm.providers.openai import OpenAIChunkParser
    from ssegate.streams import Hub, MemoryStore, stream_response

    loop = asyncio.get_running_loop()
    store = MemoryStore()
    metrics = Metrics()
    log = logging.getLogger("chain")
    lines = []
    async with Hub(store) as hub:
        feeds, transports, readers = [], [], []
        for n in range(args.streams):
            name = f"s{n}"
            await store.create(name)
            generation = Generation(name, "m", "k", loop.time(), event=asyncio.Event)
            relay = Relay(generation, metrics, loop.time)
            parser = OpenAIChunkParser("openai", "m")
            feeds.append(_Feed(parser, relay.taker(store.appender(name).add)))
            transport = CountingTransport()
            transports.append(transport)
            scope: Any = {
                "type": "http",
                "method": "POST",
                "path": "/",
                "headers": [],
                "query_string": b"",
                "http_version": "1.1",
            }
            cycle = RequestResponseCycle(
                scope,
                transport,  # type: ignore[arg-type]
                FlowControl(transport),  # type: ignore[arg-type]
                log,
                log,
                False,
                [],
                asyncio.Event(),
                False,
                True,
                lambda: None,
            )
            renderer = Renderer("openai")
            response = await stream_response(
                hub, name, Request(scope), transform=renderer, ping=15.0, new=True
            )
            readers.append(loop.create_task(response(scope, cycle.receive, cycle.send)))
        await asyncio.sleep(0.05)  # every reader waits
        for feed in feeds:
            feed.take(ROLE)  # the start
        for n in range(3):  # the frame learned, the first token's figures taken
            for feed in feeds:
                feed.take(text_chunk(n))
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        gc.collect()
        gc.freeze()  # what start-up made, as serve does
        chunks = [text_chunk(n) for n in range(args.tokens)]
        written = sum(t.writes for t in transports)
        bytecodes: collections.Counter[str] = collections.Counter()

        def trace(frame: Any, event: str, arg: Any) -> Any:
            frame.f_trace_opcodes = True
            if event == "opcode":
                code = frame.f_code
                bytecodes[f"{os.path.basename(code.co_filename)}:{code.co_qualname}"] += 1
            return trace

        if args.bytecodes:
            sys.settrace(trace)
        began = time.thread_time()
        for n, chunk in enumerate(chunks):
            for feed in feeds:
                feed.take(chunk)
            await asyncio.sleep(0)  # the flusher's turn
            if n % 2:
                gc.collect(0 if n % 4 == 1 else 1)
        spent = time.thread_time() - began
        sys.settrace(None)
        tokens = args.streams * args.tokens
        writes = (sum(t.writes for t in transports) - written) / tokens
        lines.append(
            f"{args.label}: {args.streams} streams x {args.tokens} tokens: "
            f"CPU {1e6 * spent / tokens:.2f} us/token, {writes:.2f} writes/token"
        )
        if bytecodes:
            lines.append(f"  bytecodes per token: {sum(bytecodes.values()) / tokens:.0f}")
            lines += [f"  {n / tokens:7.1f} {where}" for where, n in bytecodes.most_common(20)]
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return "\n".join(lines)


def _side_by_side(args: argparse.Namespace, argv: list[str]) -> None:
    rest = [a for a in argv if not a.startswith("--baseline") and a != args.baseline]
    figures: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(args.repeats):
        for label, src in (("this", None), ("baseline", os.path.join(args.baseline, "src"))):
            env = dict(os.environ, **({"PYTHONPATH": src} if src else {}))
            text = subprocess.run(
                [sys.executable, HERE, *rest, "--repeats", "1", "--label", label],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            print(text.rstrip(), flush=True)
            figures[label].append(float(text.split("CPU ")[1].split(" us")[0]))
    this, base = figures["this"], figures["baseline"]
    ratios = [a / b for a, b in zip(this, base, strict=True)]
    print(
        f"median this {statistics.median(this):.2f}, baseline {statistics.median(base):.2f} "
        f"us/token; pairs' ratio median {statistics.median(ratios):.2f}x; "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    argv = sys.argv[1:]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=40, help="per stream, measured")
    ap.add_argument("--bytecodes", action="store_true", help="count bytecodes per token")
    ap.add_argument("--baseline", default=None, help="a source tree to alternate with")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--label", default="ssegate", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.baseline:
        _side_by_side(args, argv)
        return
    import uvloop

    print(uvloop.run(_run(args)), flush=True)


if __name__ == "__main__":
    main()
