"""Soak: 10 000 concurrent ``echo`` streams on one gateway process, for minutes.

    .venv/bin/python benchmarks/soak.py            # 10 000 streams, 300 s
    .venv/bin/python benchmarks/soak.py --quick    # 1 000 streams, 60 s

The gateway runs as users run it (``python -m ssegate serve --config FILE``: one
process, the memory store, auth off, ``limits.max_streams_per_key`` raised, a
finished stream kept ``retention_seconds`` = 30 s). The load generator runs in
``--generators`` processes of its own (raw asyncio sockets on uvloop, HTTP/1.1
with a chunked-body and SSE decoder). Each of its ``--streams`` slots is a
client, started over ``--ramp`` seconds, that streams a chat completion
(``POST /v1/chat/completions``, ``stream``: the echo model paced at ``--pace``
tokens/s, ``--tokens`` tokens long: by default a minute's worth) to its
``[DONE]``, then starts the next while one still fits in the load phase: every
slot holds a stream throughout, and finished streams come and go (each kept 30
s), so the gateway's memory reaches a steady state that the RSS target checks.
(A generation as long as the load phase, the old default, grows every stream's
history to the end: RSS then grows with the data held, whatever the gateway.) A dropped stream is resumed by ``GET``
on the answer's ``Link`` after ``Last-Event-ID``. Each minute a tenth of the slots
(``--reconnect``) drops its connection at a moment of that minute and resumes
with ``Last-Event-ID``. A connection refused, reset or dropped by the server is
tried again, backing off, resuming after the last id (as ``EventSource`` does),
and counted. The pace is low (a token every 2 s): the soak is about holding
10 000 streams for minutes on a 2-core machine shared with the load generator;
``benchmarks/gateway.py`` measures throughput.

Every token is checked: its id must follow the previous one (else tokens were
lost or repeated) and its text must be the echo's token at that position.
The generators freeze their start-up objects and collect rarely (a full
collection over their 5 000 clients' objects stalled one 1.5 s, its tokens all
counted late). Reported: streams served, tokens/s, lateness (how much later than its pace a
token arrived after the one before it on the same connection: the jitter the
gateway and the machine add) p50/p99 overall and over time, the gateway's RSS and
open file descriptors over time (sampled every second), its CPU and the
generators' CPU (what the load itself costs on this 2-core machine), errors and
retries by kind (HTTP status, error code, exception: what failed where), and the
connections the machine dropped for a full listen queue.
Targets: every stream served with 0 lost and 0 repeated tokens, lateness p99
<= 100 ms, RSS flat after warm-up (<= 5 % growth over the second half of the
load phase). RSS and lateness over time are plotted to ``--out``/soak.png
(with the samples in soak.json).

The machine is shared and noisy: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import gc
import itertools
import json
import multiprocessing
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway import cpu_of, free_port, py_spy, summarize_profile, wait_ready
from ssegate import Decoder
from ssegate.gateway._echo import LOREM, words

PROMPT = "go"
#: Lateness histogram: 1 ms bins up to 10 s.
BINS = 10_000
WINDOW = 5.0  # seconds per point of the over-time series
LINK = re.compile(rb"(?im)^link: <([^>]+)>")
#: What a client does when a connection is refused, reset or dropped: try again
#: (resuming after its Last-Event-ID), up to RETRIES times, backing off.
DROPS = (OSError, TimeoutError, asyncio.IncompleteReadError)
RETRIES = 8
#: The load generators' young-collection threshold (see run_generator).
GC_YOUNG = 50_000


def backoff(attempt: int) -> float:
    """Seconds before the next try: 0.5, 1, 2, 4 ... up to 10, with jitter."""
    return min(10.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)


def position(event_id: str) -> tuple[int, int]:
    """Where an event id stands in its stream: (number, part). A stored event that
    renders as several wire events gives them ``<id>.1``, ``<id>.2`` ... and the
    last the bare ``<id>`` (gateway/_reading.py), so a bare id is its event's last part."""
    number, _, part = event_id.rpartition("-")[2].partition(".")
    return int(number), int(part) if part else 1 << 30


def echo_tokens(n: int) -> list[str]:
    """The echo model's answer to PROMPT with ``max_tokens`` = n (see gateway/_echo.py)."""
    tokens = words(PROMPT)
    return tokens + list(itertools.islice(itertools.cycle(words(" " + LOREM)), n - len(tokens)))


class Chunked:
    """An HTTP/1.1 chunked body, decoded incrementally."""

    def __init__(self) -> None:
        self.buffer = b""
        self.left = -1  # bytes of the current chunk still to come (-1: a size line next)
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = []
        while True:
            if self.left < 0:
                cut = self.buffer.find(b"\r\n")
                if cut < 0:
                    break
                size = int(self.buffer[:cut].split(b";")[0], 16)
                self.buffer = self.buffer[cut + 2 :]
                if size == 0:
                    self.ended = True
                    break
                self.left = size
            if len(self.buffer) < self.left + 2:
                if self.left and self.buffer:
                    take = min(self.left, len(self.buffer))
                    out.append(self.buffer[:take])
                    self.buffer = self.buffer[take:]
                    self.left -= take
                break
            out.append(self.buffer[: self.left])
            self.buffer = self.buffer[self.left + 2 :]
            self.left = -1
        return b"".join(out)


class Stats:
    def __init__(self, began: float) -> None:
        self.began = began
        self.generations = 0
        self.served = 0  # generations followed to their done
        self.tokens = 0
        self.lost = 0
        self.repeated = 0
        self.wrong = 0
        self.reconnects = 0
        self.retries = 0  # connections refused, reset or dropped, and tried again
        self.errors: list[str] = []
        self.kinds: dict[str, int] = {}  # what each retry and error was, counted
        self.posts: list[float] = []  # seconds from the POST to its answer's head
        self.lateness = array.array("q", bytes(8 * BINS))
        self.windows: dict[int, list[Any]] = {}  # index -> [tokens, lateness histogram]

    def kind(self, what: str) -> None:
        self.kinds[what] = self.kinds.get(what, 0) + 1

    def token(self, now: float, late: float | None) -> None:
        self.tokens += 1
        w = int((now - self.began) // WINDOW)
        window = self.windows.get(w)
        if window is None:
            window = self.windows[w] = [0, {}]
        window[0] += 1
        if late is not None:
            b = min(int(late * 1000), BINS - 1)
            self.lateness[b] += 1
            window[1][b] = window[1].get(b, 0) + 1


def run_generator(
    index: int, slots: list[int], port: int, args: dict[str, Any], began: float, out: str
) -> None:
    """One load-generator process: ``slots`` clients; its figures written to ``out``."""
    import uvloop

    with contextlib.suppress(ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The generator's own collector must not stall it: a full collection over
    # 5 000 clients' objects took up to 1.5 s, every token read meanwhile
    # counted late against the gateway. What start-up made is frozen, and the
    # young collections come every GC_YOUNG new objects instead of 700.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 1000, 1000)
    pace, length = args["pace"], args["tokens"]
    interval = 1 / pace
    expected = echo_tokens(length)
    stats = Stats(began)
    end_load = began + args["duration"]
    body = json.dumps(
        {
            "model": "echo",
            "stream": True,
            "max_tokens": length,
            "messages": [{"role": "user", "content": PROMPT}],
        }
    ).encode()
    post = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body
    )

    async def request(raw: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        """Send ``raw``; the reader, writer and the response's head."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writer.write(raw)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        return reader, writer, head

    async def generation(reconnect_at: list[float]) -> None:
        """A streaming chat completion read to ``[DONE]``, resumed (``GET`` its ``Link``
        after ``Last-Event-ID``) after each drop; every token checked."""
        path: bytes | None = None  # where to resume, once the answer named it
        last_id = b""
        last = (0, 0)  # the position of the last event received ((0, 0): none yet)
        n = 0  # tokens received, each once
        drops = 0
        sent = time.monotonic()
        while True:
            if path is None:
                raw = post
            else:
                raw = (
                    b"GET %s HTTP/1.1\r\nhost: 127.0.0.1\r\nlast-event-id: %s\r\n"
                    % (
                        path,
                        last_id,
                    )
                    + b"connection: close\r\n\r\n"
                )
            try:
                reader, writer, head = await request(raw)
            except DROPS as exc:  # refused or reset (the listen queue overflowed): back off, retry
                stats.kind(f"retry {raw[:3].decode()} head: {type(exc).__name__}")
                stats.retries += 1
                drops += 1
                if drops == RETRIES:
                    raise
                await asyncio.sleep(backoff(drops))
                continue
            try:
                if head[9:12] != b"200":
                    stats.kind(f"error {raw[:3].decode()}: HTTP {head[9:12].decode()}")
                    stats.errors.append(f"{raw[:4]!r}: {head[:12]!r}")
                    return
                if path is None:
                    stats.posts.append(time.monotonic() - sent)
                    link = LINK.search(head)
                    if link is None:
                        stats.errors.append(f"no Link in {head!r}")
                        return
                    path = link.group(1)
                chunked, decoder = Chunked(), Decoder()
                previous: float | None = None  # the last token's arrival on this connection
                while True:
                    try:
                        data = await asyncio.wait_for(reader.read(65536), 60)
                    except DROPS as exc:
                        stats.kind(f"retry body: {type(exc).__name__}")
                        data = b""
                    else:
                        if not data:
                            stats.kind("retry body: closed by the server")
                    if not data:  # dropped by the server (or the network): resume, as a client
                        stats.retries += 1
                        drops += 1
                        if drops == RETRIES:
                            raise ConnectionError("dropped too often")
                        await asyncio.sleep(backoff(drops))
                        break
                    now = time.monotonic()
                    for event in decoder.feed(chunked.feed(data)):
                        if event.data == "[DONE]":  # (it carries the last event's id)
                            # a token missing mid-stream shows as wrong text after it too
                            stats.lost += max(0, len(expected) - n)
                            stats.served += 1
                            return
                        if not event.id:  # every event of a generation has one
                            stats.kind("error event without an id")
                            stats.errors.append(f"event without an id: {event.data[:200]}")
                            return
                        number = position(event.id)
                        if number <= last:
                            stats.repeated += 1
                            continue
                        # (numbers may skip: the usage event has no OpenAI chunk)
                        last, last_id = number, event.id.encode()
                        chunk = json.loads(event.data)
                        if "error" in chunk:
                            stats.kind(f"error chunk: {chunk['error'].get('code')}")
                            stats.errors.append(f"error chunk: {event.data[:200]}")
                            return
                        choices = chunk["choices"]
                        text = choices[0]["delta"].get("content") if choices else None
                        if text:  # a token (the first chunk's content is "")
                            if n >= len(expected) or text != expected[n]:
                                stats.wrong += 1
                            n += 1
                            late = None if previous is None else max(0.0, now - previous - interval)
                            previous = now
                            stats.token(now, late)
                    if reconnect_at and now >= reconnect_at[0]:
                        reconnect_at.pop(0)
                        stats.reconnects += 1
                        break  # drop the connection: resume after last_id
            finally:
                writer.transport.abort()

    async def client(slot: int, delay: float) -> None:
        await asyncio.sleep(delay)
        # this slot's drops: once in each minute whose number matches its tenth
        share = max(1, round(1 / args["reconnect"])) if args["reconnect"] else 0
        reconnect_at = [
            began + minute * 60 + (slot * 7919 % 60_000) / 1000
            for minute in range(int(args["duration"] // 60) + 1)
            if share and slot % share == minute % share
        ]
        first = True  # every slot runs one generation; more while they end in the load phase
        while first or time.monotonic() + length * interval <= end_load + interval:
            first = False
            stats.generations += 1
            try:
                await generation(reconnect_at)
            except Exception as exc:  # given up, or a surprise: counted, never silent
                stats.kind(f"error gave up: {type(exc).__name__}")
                stats.errors.append(f"{type(exc).__name__}: {exc}")
            while reconnect_at and reconnect_at[0] < time.monotonic():
                reconnect_at.pop(0)  # missed between generations: not counted

    async def main() -> None:
        ramp = args["ramp"]
        total = args["streams"]
        tasks = [
            asyncio.ensure_future(
                client(slot, max(0.0, began - time.monotonic()) + slot * ramp / total)
            )
            for slot in slots
        ]
        await asyncio.wait(tasks, timeout=args["duration"] + length * interval + 120)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    cpu0 = time.process_time()
    uvloop.run(main())
    result = {
        "generations": stats.generations,
        "served": stats.served,
        "tokens": stats.tokens,
        "lost": stats.lost,
        "repeated": stats.repeated,
        "wrong": stats.wrong,
        "reconnects": stats.reconnects,
        "retries": stats.retries,
        "errors": len(stats.errors),
        "error_samples": stats.errors[:5],
        "kinds": stats.kinds,
        "posts": sorted(stats.posts)[:: max(1, len(stats.posts) // 1000)],
        "lateness": list(stats.lateness),
        "windows": {w: [c, h] for w, (c, h) in stats.windows.items()},
        "cpu": time.process_time() - cpu0,
    }
    Path(out).write_text(json.dumps(result))


def run_queue_wait(pid: int) -> float:
    """Seconds the process spent ready to run but waiting for a core (Linux schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def listen_overflows() -> int:
    """The machine's count of connections dropped for a full listen queue (Linux)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", 0))
    return 0


def percentile(histogram: list[int] | dict[int, int], q: float) -> float:
    """The q-quantile of a 1 ms histogram, in ms."""
    items = sorted(histogram.items()) if isinstance(histogram, dict) else enumerate(histogram)
    pairs = [(int(b), c) for b, c in items if c]
    total = sum(c for _, c in pairs)
    if not total:
        return float("nan")
    seen = 0
    for b, c in pairs:
        seen += c
        if seen >= q * total:
            return float(b)
    return float(pairs[-1][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 000 streams for 40 s")
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=300.0, help="load phase, seconds")
    parser.add_argument("--ramp", type=float, default=120.0, help="seconds to start every slot")
    parser.add_argument("--pace", type=float, default=0.5, help="echo tokens/s per stream")
    parser.add_argument(
        "--tokens", type=int, default=0, help="tokens per generation (0: a minute's worth)"
    )
    parser.add_argument("--reconnect", type=float, default=0.10, help="share dropping each minute")
    parser.add_argument("--generators", type=int, default=2, help="load-generator processes")
    parser.add_argument("--out", default="benchmarks/out/soak")
    parser.add_argument("--profile", help="py-spy the gateway through the load phase (raw, FILE)")
    args = parser.parse_args()
    if args.quick:
        args.streams, args.duration, args.ramp = 1000, 60.0, 10.0
    if not args.tokens:
        args.tokens = max(1, round(args.pace * min(60.0, args.duration)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.streams * 2 + 1000
    if soft < need:  # the gateway inherits it
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < args.streams + 500:
        sys.exit(f"open files limited to {soft}: too few for {args.streams} streams")

    import psutil

    port = free_port()
    config = Path(tempfile.mkdtemp(prefix="ssegate-soak-")) / "soak.toml"
    config.write_text(
        f'default_model = "echo"\necho_tokens_per_second = {args.pace}\n'
        "retention_seconds = 30\n"
        f"[limits]\nmax_streams_per_key = {args.streams * 2}\n"
        "[local]\npreload = false\n"
    )
    log = open(out / "gateway.log", "wb")  # noqa: SIM115
    gateway = subprocess.Popen(
        [sys.executable, "-m", "ssegate", "serve", "--config", str(config)],
        env={**os.environ, "SSEGATE_PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    samples: list[dict[str, float]] = []
    generators: list[multiprocessing.process.BaseProcess] = []
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", gateway, 60)
        proc = psutil.Process(gateway.pid)
        fds_idle = proc.num_fds()
        print(
            f"soak: {args.streams} streams x {args.pace} tokens/s, {args.tokens} tokens each, "
            f"{args.duration:.0f} s load (ramp {args.ramp:.0f} s), "
            f"{args.reconnect:.0%} reconnecting each minute, {args.generators} generator processes"
        )
        began = time.monotonic() + 2.0  # the generators' common start
        ctx = multiprocessing.get_context("spawn")
        files = [out / f"generator{i}.json" for i in range(args.generators)]
        generators += [
            ctx.Process(
                target=run_generator,
                args=(
                    i,
                    list(range(i, args.streams, args.generators)),
                    port,
                    vars(args),
                    began,
                    str(f),
                ),
            )
            for i, f in enumerate(files)
        ]
        spy = py_spy(gateway.pid, args.profile) if args.profile else None
        for g in generators:
            g.start()
        gens = [psutil.Process(g.pid) for g in generators]
        while any(g.is_alive() for g in generators):
            time.sleep(1.0)
            with contextlib.suppress(psutil.Error):
                samples.append(
                    {
                        "t": time.monotonic() - began,
                        "rss_mb": proc.memory_info().rss / 2**20,
                        "fds": proc.num_fds(),
                        "gateway_cpu": cpu_of(gateway.pid),
                        "gateway_waited": run_queue_wait(gateway.pid),
                        "overflows": listen_overflows(),
                        "generators_cpu": sum(
                            sum(p.cpu_times()[:2]) for p in gens if p.is_running()
                        ),
                        "generator_cpus": [
                            sum(p.cpu_times()[:2]) if p.is_running() else 0.0 for p in gens
                        ],
                    }
                )
        for g in generators:
            g.join()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        time.sleep(3.0)  # connections closed by now
        fds_after = proc.num_fds()
    finally:
        for g in generators:  # interrupted: stop them too
            if g.is_alive():
                g.terminate()
        gateway.send_signal(signal.SIGINT)
        try:
            gateway.wait(30)
        except subprocess.TimeoutExpired:
            gateway.kill()
        log.close()
    report(args, out, files, samples, fds_idle, fds_after)
    if args.profile:
        summarize_profile(args.profile, top=30)


def report(
    args: argparse.Namespace,
    out: Path,
    files: list[Path],
    samples: list[dict[str, float]],
    fds_idle: int,
    fds_after: int,
) -> None:
    parts = [json.loads(f.read_text()) for f in files]
    total = {k: sum(p[k] for p in parts) for k in
             ("generations", "served", "tokens", "lost", "repeated", "wrong", "reconnects", "retries", "errors", "cpu")}  # fmt: skip
    lateness = [sum(p["lateness"][b] for p in parts) for b in range(BINS)]
    windows: dict[int, list[Any]] = {}
    for p in parts:
        for w, (count, hist) in p["windows"].items():
            window = windows.setdefault(int(w), [0, {}])
            window[0] += count
            for b, c in hist.items():
                window[1][int(b)] = window[1].get(int(b), 0) + c
    series = [
        {
            "t": (w + 0.5) * WINDOW,
            "tokens_per_s": c / WINDOW,
            "late_p50_ms": percentile(h, 0.50),
            "late_p99_ms": percentile(h, 0.99),
        }
        for w, (c, h) in sorted(windows.items())
    ]
    load = [s for s in samples if 0 <= s["t"] <= args.duration]
    warm = [s for s in load if s["t"] >= args.duration / 2]
    growth = float("nan")
    if len(warm) >= 4:
        k = max(1, len(warm) // 10)
        start = sorted(s["rss_mb"] for s in warm[:k])[k // 2]
        end = sorted(s["rss_mb"] for s in warm[-k:])[k // 2]
        growth = end / start - 1
    span = (samples[-1]["t"] if samples else args.duration) or 1.0
    gateway_cpu = samples[-1]["gateway_cpu"] - samples[0]["gateway_cpu"] if samples else 0.0
    p50, p99 = percentile(lateness, 0.50), percentile(lateness, 0.99)
    peak_fds = max((s["fds"] for s in samples), default=0)
    rss = [s["rss_mb"] for s in samples] or [0.0]
    print(
        f"served        {total['served']} of {total['generations']} generations "
        f"({args.streams} at once); {total['reconnects']} dropped on purpose and resumed with "
        f"Last-Event-ID, {total['retries']} connections refused, reset or dropped and tried again"
    )
    print(
        f"tokens        {total['tokens']} ({total['tokens'] / span:.0f}/s over {span:.0f} s), "
        f"lost {total['lost']}, repeated {total['repeated']}, wrong text {total['wrong']}"
    )
    posts = sorted(x for p in parts for x in p["posts"])
    if posts:
        print(
            f"answer head   p50 {posts[len(posts) // 2] * 1000:.0f} ms, "
            f"p99 {posts[int(len(posts) * 0.99)] * 1000:.0f} ms"
        )
    print(f"lateness      p50 {p50:.0f} ms, p99 {p99:.0f} ms (after the pace, token to token)")
    print(
        f"gateway RSS   {rss[0]:.0f} MB at start of load, peak {max(rss):.0f} MB; "
        f"second half of the load phase {growth:+.1%}"
    )
    print(f"gateway fds   {fds_idle} idle, peak {peak_fds}, {fds_after} after the load")
    print(
        f"CPU           gateway {gateway_cpu / span:.0%} of a core, generators "
        f"{total['cpu'] / span:.0%} of a core ({total['cpu'] / max(total['tokens'], 1) * 1e6:.0f} "
        f"µs per token)"
    )
    kinds: dict[str, int] = {}
    for p in parts:
        for k, c in p["kinds"].items():
            kinds[k] = kinds.get(k, 0) + c
    print(
        f"errors        {total['errors']}"
        + "".join(f"\n  {c:6d} {k}" for k, c in sorted(kinds.items()))
        + "".join(f"\n  {e}" for p in parts for e in p["error_samples"][:2])
    )
    if samples:
        print(
            f"listen queue  {samples[-1]['overflows'] - samples[0]['overflows']} connections "
            "dropped for a full listen queue (the machine's TcpExt ListenOverflows)"
        )
    waited = samples[-1]["gateway_waited"] - samples[0]["gateway_waited"] if samples else 0.0
    print(
        f"machine       load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; the "
        f"gateway, ready to run, waited for a core {waited / span:.0%} of the time"
    )
    met = {
        "every stream served": total["served"] == total["generations"] and total["errors"] == 0,
        "0 lost, 0 repeated": total["lost"] == 0 and total["repeated"] == 0 and total["wrong"] == 0,
        "lateness p99 <= 100 ms": p99 <= 100,
        "RSS growth <= 5 % (second half)": growth <= 0.05,
        "no fd left open": fds_after <= fds_idle + 5,
    }
    print("targets       " + "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in met.items()))
    (out / "soak.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "total": total,
                "samples": samples,
                "series": series,
                "lateness_p50_ms": p50,
                "lateness_p99_ms": p99,
                "rss_growth": growth,
                "fds": [fds_idle, peak_fds, fds_after],
                "targets": met,
            },
            indent=1,
        )
    )
    plot(out / "soak.png", args, samples, series)
    print(f"plot          {out / 'soak.png'}")


def plot(path: Path, args: argparse.Namespace, samples: list[dict[str, float]],
         series: list[dict[str, float]]) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    t = [s["t"] for s in samples]
    top.plot(t, [s["rss_mb"] for s in samples], color="tab:blue", label="RSS (MB)")
    top.set_ylabel("gateway RSS (MB)")
    fds = top.twinx()
    fds.plot(t, [s["fds"] for s in samples], color="tab:gray", alpha=0.6, label="open fds")
    fds.set_ylabel("open file descriptors")
    top.axvspan(args.duration / 2, args.duration, color="tab:green", alpha=0.08)
    top.set_title(f"soak: {args.streams} echo streams at {args.pace} tokens/s, one gateway")
    ts = [s["t"] for s in series]
    bottom.plot(ts, [s["late_p99_ms"] for s in series], color="tab:red", label="lateness p99")
    bottom.plot(ts, [s["late_p50_ms"] for s in series], color="tab:orange", label="lateness p50")
    bottom.axhline(100, color="tab:red", linestyle=":", linewidth=1)
    bottom.set_ylabel("lateness (ms)")
    bottom.set_xlabel("seconds since the load began")
    rate = bottom.twinx()
    rate.plot(ts, [s["tokens_per_s"] for s in series], color="tab:purple", alpha=0.5)
    rate.set_ylabel("tokens/s received")
    bottom.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
