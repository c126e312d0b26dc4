"""Stream starts: the gateway's CPU per streaming chat completion, start to ``[DONE]``.

    .venv/bin/python benchmarks/stream_starts.py                    # this tree
    .venv/bin/python benchmarks/stream_starts.py --baseline TREE    # and TREE/src's, side by side
    .venv/bin/python benchmarks/stream_starts.py --profile /tmp/starts.raw

What limits the soak (benchmarks/soak.py): with 10 000 slots of one-minute
streams the gateway starts ~170 streams a second, and each start is a whole
request: a new connection, ``POST /v1/chat/completions`` (body parsing and
validation, auth, limits, model routing, the store's stream and lease, the
generation's task, the response and its reader), then the stream's few events,
``[DONE]`` and the connection's close. Here the ``echo`` model answers at once
(``echo_tokens_per_second = 0``, ``max_tokens`` 1: a start event, one token, usage,
finish), so what is measured is that fixed cost, not the per-token one.

Each tree runs its own ``python -m ssegate serve --config FILE`` (``TREE/src``
first on its ``PYTHONPATH``; memory store, auth off, access log as ``serve``
has it); one load generator (raw asyncio sockets on uvloop, HTTP/1.1,
``connection: close`` as in the soak) keeps ``--concurrency`` requests in flight
to one gateway at a time, ``--requests`` in all, every answer read to
``[DONE]``; the trees take turns, ``--repeats`` times. Reported, medians: the
gateway's CPU (user + system) per stream, and streams per second. The
machine is shared: compare the columns of one run; the load average is printed.
``--profile FILE`` records this tree's gateway with py-spy during its last run
and prints where its samples went.

Then what an open stream holds: each tree's app in a process of its own
(``create_app`` under uvicorn, as ``serve`` runs it, collector tuned the same,
no access log), ``--held`` streams opened by a client process and held (the
echo at a token a minute), and the objects the collector tracks counted
(``gc.get_objects()``) before and while they are held: the objects per open
stream, which every collection walks (the soak's 10 000 streams hold millions).
While they open, ``sys.setprofile`` counts the server thread's calls: Python
calls (each coroutine resumption is one too) and C calls per start, from the
connection to the first event.

``--upstream tls`` (or ``http``) measures a relayed start instead: the gateway's
default model is an ``openai`` provider in front of the fake upstream of
``benchmarks/gateway.py`` (``fake_upstream.py``, a process of its own; over TLS a
private CA's certificate that the gateways trust by ``SSL_CERT_FILE``, never
skipping verification; keep-alive on, as providers have it, or off with
``--no-upstream-keep-alive``: every answer closes its connection and every start
pays a new one). Each stream is the role chunk and one token at once, then
``[DONE]`` 50 ms later: what differs from the ``echo`` run is what relaying costs a
start. The upstream counts the connections it accepted and the TLS sessions
resumed (``GET /stats``), reported per start for each tree.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from echo_streams import baseline_ratio, medians
from fake_upstream import make_certificate

from gateway import cpu_of, free_port, py_spy, summarize_profile, wait_ready

BODY = json.dumps(
    {
        "model": "echo",
        "stream": True,
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "go"}],
    }
).encode()


def _post(body: bytes) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body
    )


POST = _post(BODY)
#: The relayed start (``--upstream``): the same request to the upstream's model.
RELAYED = _post(BODY.replace(b'"echo"', b'"up/m"'))


async def _one(port: int, post: bytes) -> bool:
    """One streaming request read to its end; whether it ended with ``[DONE]``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(post)
        data = await reader.read()  # the server closes: connection: close
    finally:
        writer.close()
    return data.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in data


def drive(port: int, requests: int, concurrency: int, post: bytes) -> tuple[int, float]:
    """``requests`` streams, ``concurrency`` at a time; (how many ended well, seconds)."""
    import uvloop

    async def main() -> tuple[int, float]:
        left = requests
        good = 0

        async def worker() -> None:
            nonlocal left, good
            while left > 0:
                left -= 1
                try:
                    ended = await _one(port, post)
                except OSError:
                    continue
                good += ended  # (not `good += await ...`: that reads good before the await)

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return good, time.monotonic() - began

    return uvloop.run(main())


def accept_queue(port: int) -> int:
    """How many connections wait in the kernel's accept queue of ``port``'s listening
    sockets (``/proc/net/tcp``: a listening socket's ``rx_queue``), or -1 unknown."""
    total, found = 0, False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                total += int(fields[4].split(":")[1], 16)
                found = True
    return total if found else -1


def burst(port: int, streams: int, ramp: float, post: bytes) -> dict[str, float]:
    """``streams`` streams started over ``ramp`` seconds (not waiting for each other),
    each read to its end: time to the first event (p50, p99, ms), the fraction that
    ended with ``[DONE]``, and the deepest accept queue seen (sampled every 10 ms)."""
    import threading

    import uvloop

    deepest = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            deepest[0] = max(deepest[0], accept_queue(port))
            time.sleep(0.01)

    async def one(delay: float, firsts: list[float]) -> bool:
        await asyncio.sleep(delay)
        began = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(post)
            data = b""
            while b"\ndata: " not in data:
                got = await reader.read(65536)
                if not got:
                    return False
                data += got
            firsts.append(time.monotonic() - began)
            while b"data: [DONE]" not in data:
                got = await reader.read(65536)
                if not got:
                    return False
                data = data[-16:] + got
            return True
        finally:
            writer.close()

    async def main() -> dict[str, float]:
        firsts: list[float] = []
        ended = await asyncio.gather(
            *(one(i * ramp / streams, firsts) for i in range(streams)), return_exceptions=True
        )
        firsts.sort()
        return {
            "ok": sum(e is True for e in ended) / streams,
            "ttft50": firsts[len(firsts) // 2] * 1e3 if firsts else float("nan"),
            "ttft99": firsts[min(len(firsts) - 1, int(len(firsts) * 0.99))] * 1e3
            if firsts
            else float("nan"),
        }

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = uvloop.run(main())
    finally:
        sampling.set()
        sampler.join()
    out["queue"] = deepest[0]
    return out


def hold(port: int, streams: int) -> None:
    """Open ``streams`` streams (each a token a minute), say ``held``, and hold them."""
    body = BODY.replace(b'"max_tokens": 1', b'"max_tokens": 9')
    post = POST.replace(b"connection: close\r\n", b"").replace(BODY, body)
    post = post.replace(b"content-length: %d" % len(BODY), b"content-length: %d" % len(body))

    async def one(held: list[asyncio.StreamWriter]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post)
        await reader.readuntil(b"\r\n\r\n")
        held.append(writer)
        await asyncio.sleep(3600)

    async def main() -> None:
        held: list[asyncio.StreamWriter] = []
        tasks = [asyncio.ensure_future(one(held)) for _ in range(streams)]
        while len(held) < streams:  # noqa: ASYNC110 (a benchmark's client, polling)
            await asyncio.sleep(0.05)
        print("held", flush=True)
        await asyncio.gather(*tasks)

    asyncio.run(main())


def held_objects(streams: int) -> dict[str, float]:
    """Per stream, in this process's gateway: the objects the collector tracks
    while it is open, and the Python calls (with coroutine resumptions) and C
    calls its start made (``sys.setprofile`` in the server's thread)."""
    import gc
    import threading
    from collections import Counter

    import uvicorn

    from ssegate.cli._serve import tuned_for_serving
    from ssegate.gateway import Settings, create_app

    settings = Settings.model_validate(
        {
            "default_model": "echo",
            "echo_tokens_per_second": 1 / 60,
            "limits": {"max_streams_per_key": streams * 2},
            "local": {"preload": False},
        }
    )
    port = free_port()
    config = uvicorn.Config(
        tuned_for_serving(create_app(settings)), port=port, log_level="warning", backlog=4096
    )
    server = uvicorn.Server(config)
    calls: Counter[str] = Counter()
    counting = [False]

    def profile(frame: Any, event: str, arg: Any) -> None:
        if counting[0]:
            calls[event] += 1

    threading.setprofile(profile)  # the threads started from now on: the server's
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    hold = [sys.executable, __file__, "--hold-client", str(port)]

    def tracked() -> int:
        gc.collect()
        return len(gc.get_objects())

    warm = subprocess.Popen([*hold, "--held=20"], stdout=subprocess.PIPE)
    assert warm.stdout is not None
    warm.stdout.readline()  # warm-up: first-request caches are not counted
    warm.kill()
    warm.wait()
    time.sleep(1.0)
    before = tracked()
    counting[0] = True
    client = subprocess.Popen([*hold, f"--held={streams}"], stdout=subprocess.PIPE)
    assert client.stdout is not None
    client.stdout.readline()
    time.sleep(0.5)
    counting[0] = False
    during = tracked()
    client.kill()
    client.wait()
    server.should_exit = True
    thread.join(30)
    return {
        "objects": (during - before) / streams,
        "calls": calls["call"] / streams,
        "c_calls": calls["c_call"] / streams,
    }


class Gateway:
    """``ssegate serve`` from a source tree (``None``: this one), on a port of its own."""

    def __init__(
        self, name: str, src: str | None, config: Path, env: dict[str, str], post: bytes
    ) -> None:
        self.name = name
        self.port = free_port()
        self.post = post
        env = {**os.environ, **env, "SSEGATE_PORT": str(self.port)}
        if src is not None:
            env["PYTHONPATH"] = src
        self.log = open(config.with_name(f"{name.replace(' ', '_')}.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ssegate", "serve", "--config", str(config)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_ready(f"http://127.0.0.1:{self.port}/readyz", self.proc, 60)

    def run(self, requests: int, concurrency: int) -> dict[str, float]:
        before = cpu_of(self.proc.pid)
        good, seconds = drive(self.port, requests, concurrency, self.post)
        cpu = cpu_of(self.proc.pid) - before
        return {
            "ok": good / requests,
            "cpu_ms": cpu / requests * 1e3,
            "per_s": requests / seconds,
            "starts": requests,
        }

    def burst(self, streams: int, ramp: float) -> dict[str, float]:
        before = cpu_of(self.proc.pid)
        out = burst(self.port, streams, ramp, self.post)
        out["cpu_ms"] = (cpu_of(self.proc.pid) - before) / streams * 1e3
        out["starts"] = streams
        return out

    def counted(
        self, upstream: Upstream | None, run: Callable[[], dict[str, float]]
    ) -> dict[str, float]:
        """``run()``, with the upstream's new connections and resumed TLS sessions per start."""
        if upstream is None:
            return run()
        before = upstream.stats() or {}
        out = run()
        after = upstream.stats() or {}
        starts = out["starts"]
        for name in ("connections", "resumed"):
            # stats() itself is one connection more each time
            extra = 1 if name == "connections" else 0
            out[name] = (after.get(name, 0) - before.get(name, 0) - extra) / starts
        return out

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Upstream:
    """``--upstream``: the fake OpenAI-compatible upstream, a process of its own."""

    def __init__(self, workdir: Path, tls: bool, keep_alive: bool) -> None:
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        self.cafile = make_certificate(str(workdir)) if tls else ""
        bench = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gateway.py")
        cmd = [sys.executable, bench, "--role", "upstream", "--port", str(self.port)]
        cmd += [
            "--tokens",
            "1",
            "--upstream-keep-alive" if keep_alive else "--no-upstream-keep-alive",
        ]
        cmd += ["--certdir", str(workdir)] if tls else []
        self.proc = subprocess.Popen(cmd)
        deadline = time.monotonic() + 20
        while self.stats() is None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.1)

    def stats(self) -> dict[str, int] | None:
        """The upstream's counts (connections accepted, TLS sessions resumed)."""
        import ssl
        import urllib.request

        ctx = ssl.create_default_context(cafile=self.cafile) if self.cafile else None
        try:
            url = f"{self.scheme}://127.0.0.1:{self.port}/stats"
            with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
                found: dict[str, int] = json.loads(r.read())
        except OSError:
            return None
        found["connections"] -= 1  # this request's own
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="streams per run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", help="another source tree, run from TREE/src")
    parser.add_argument("--profile", help="py-spy this tree's gateway in its last run (raw)")
    parser.add_argument("--held", type=int, default=500, help="streams held for the count")
    parser.add_argument(
        "--upstream",
        choices=["tls", "http"],
        help="relay an openai provider in front of the fake upstream instead of echo",
    )
    parser.add_argument(
        "--upstream-keep-alive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the upstream keeps connections open between answers (default)",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=0,
        help="instead: BURST streams started over --ramp seconds, per tree and repeat",
    )
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds a --burst starts over")
    parser.add_argument("--held-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hold-client", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold_client:
        hold(args.hold_client, args.held)
        return
    if args.held_child:
        print(json.dumps(held_objects(args.held)))
        return
    config = Path(tempfile.mkdtemp(prefix="ssegate-starts-")) / "starts.toml"
    config.write_text(
        'default_model = "echo"\necho_tokens_per_second = 0\n'
        "[limits]\nmax_streams_per_key = 100000\n[local]\npreload = false\n"
    )
    upstream = None
    env: dict[str, str] = {}
    post = POST
    what = "echo"
    if args.upstream:
        upstream = Upstream(config.parent, args.upstream == "tls", args.upstream_keep_alive)
        url = f"{upstream.scheme}://127.0.0.1:{upstream.port}/v1"
        with config.open("a") as f:
            f.write(f'[providers.up]\nkind = "openai"\nbase_url = "{url}"\n')
            f.write('api_key = "sk-upstream"\nmodels = ["m"]\n')
        env = {"SSL_CERT_FILE": upstream.cafile} if upstream.cafile else {}
        post = RELAYED
        keep = "keep-alive" if args.upstream_keep_alive else "no keep-alive"
        what = f"relayed ({args.upstream.upper()} upstream, {keep})"
    trees: dict[str, str | None] = {"this tree": None}
    if args.baseline:
        trees["baseline"] = os.path.join(os.path.abspath(args.baseline), "src")
    loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.burst:
        shape = f"a burst of {args.burst} streaming {what} completions over {args.ramp:g} s"
    else:
        shape = (
            f"{args.requests} streaming {what} completions per run, {args.concurrency} in flight"
        )
    print(f"stream starts: {shape}, {args.repeats} repeats; load average {loadavg}")
    gateways = [Gateway(name, src, config, env, post) for name, src in trees.items()]
    results: dict[str, list[dict[str, float]]] = {g.name: [] for g in gateways}
    try:
        for g in gateways:  # warm-up: imports and first-request caches are not measured
            g.run(100, args.concurrency)
        for repeat in range(args.repeats):
            for g in gateways:
                spy = None
                if args.profile and g.name == "this tree" and repeat == args.repeats - 1:
                    spy = py_spy(g.proc.pid, args.profile)
                if args.burst:
                    run = functools.partial(g.burst, args.burst, args.ramp)
                else:
                    run = functools.partial(g.run, args.requests, args.concurrency)
                results[g.name].append(g.counted(upstream, run))
                if args.burst:
                    time.sleep(1.0)  # the burst's connections closed, the gateway idle again
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(30)
    finally:
        for g in gateways:
            g.stop()
        if upstream is not None:
            upstream.proc.terminate()
            upstream.proc.wait(10)
    for name, runs in results.items():
        med = medians(runs)
        spread = ", ".join(f"{r['cpu_ms']:.2f}" for r in runs)
        if args.burst:
            print(
                f"{name:10s} {med['cpu_ms']:5.2f} ms gateway CPU per stream ({spread}); first "
                f"event p50 {med['ttft50']:.1f} ms, p99 {med['ttft99']:.1f} ms; deepest accept "
                f"queue {med['queue']:.0f}; {med['ok']:.1%} ended with [DONE] "
                f"(medians of {len(runs)})"
            )
        else:
            print(
                f"{name:10s} {med['cpu_ms']:5.2f} ms gateway CPU per stream ({spread}), "
                f"{med['per_s']:.0f} streams/s, {med['ok']:.1%} ended with [DONE] "
                f"(medians of {len(runs)})"
            )
        if upstream is not None:
            print(
                f"{'':10s} per start: {med['connections']:.3f} new upstream connections, "
                f"{med['resumed']:.3f} of them resumed TLS sessions"
            )
    if args.baseline:
        ratio = baseline_ratio(results, "cpu_ms")
        print(f"ratio      {ratio:.2f} x the baseline's CPU per stream", end="")
        if args.burst:
            print(f", {baseline_ratio(results, 'ttft50'):.2f} x its first-event p50", end="")
        print()
    if args.held:
        for name, src in trees.items():
            env = {**os.environ, "PYTHONPATH": src} if src else dict(os.environ)
            child = [sys.executable, __file__, "--held-child", f"--held={args.held}"]
            out = subprocess.run(child, env=env, capture_output=True, text=True, check=True)
            held = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{name:10s} {held['objects']:5.0f} objects tracked by the collector per open "
                f"stream; its start (to the first event): {held['calls']:.0f} Python calls and "
                f"resumptions, {held['c_calls']:.0f} C calls"
            )
    print(f"machine    load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.profile:
        summarize_profile(args.profile, top=40)


if __name__ == "__main__":
    main()
