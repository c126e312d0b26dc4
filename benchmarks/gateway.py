"""Gateway benchmark: ``ssegate serve`` relaying OpenAI-compatible streams, beside its peers.

Three processes besides this one, each its own:

- a fake OpenAI-compatible upstream (``benchmarks/fake_upstream.py``, shared
  with the relay benchmark: raw asyncio on uvloop, pre-encoded SSE chunks): each
  stream gets its first token at once, stamped with the ``time.monotonic()`` at
  which it was written, then one token every 50 ms (20 tokens/s), each stamped
  with the time it was due; like providers' servers it keeps connections open
  between answers (chunked bodies), so the gateway's connection pool reuses them
  (``--no-upstream-keep-alive``: every answer closes its connection, and every
  stream pays a new connection); and like providers it serves HTTPS
  (``--no-upstream-tls``: plain HTTP), with a certificate for 127.0.0.1 from a
  private CA made at start (``trustme``, in the ``bench`` extra) that every
  client of the upstream trusts, none skipping verification: the load generator
  reading it ``direct`` by an ``ssl`` context, the gateways (ssegate's and
  ``--baseline``'s) and LiteLLM by ``SSL_CERT_FILE`` (and
  ``REQUESTS_CA_BUNDLE``), the way a deployment trusts a private CA. With
  keep-alive a TLS handshake is paid per new upstream connection, not per
  stream;
- the gateway, exactly as users run it: ``python -m ssegate serve --config FILE``
  (one process, uvicorn with uvloop and httptools, the memory store, auth off),
  with the upstream configured as an ``openai`` provider (``up/m``) and
  ``limits.max_streams_per_key`` raised above C (its default, 64, would answer
  429 to the rest: with auth off every client is the same "key");
- a load generator (raw asyncio streams on uvloop, one connection per stream,
  starts spread over ``--ramp`` seconds) that reads the SSE bytes and notes when
  each stamp arrives.

For C concurrent streams the same load generator reads the same upstream
``direct`` (the floor) and through the gateway, in one run, interleaved.
Reported, medians of the repeats:

- delivered: tokens received / tokens due (a stream ends at ``[DONE]``);
- TTFT p50/p99: from connecting to the first token (over TLS, ``direct``
  opens all its connections, handshakes done, before the first request, and
  counts from writing it: the gateway's clients speak plain HTTP to it and its
  pool holds the upstream's connections open, so the floor is the upstream
  streaming over open TLS connections); "added" is the gateway's percentile
  minus direct's;
- per-token lateness p50/p99: arrival minus the upstream's schedule (tokens
  after the first); "added" as for TTFT;
- CPU: the gateway process's user+system time (psutil) over the run, divided by
  the tokens it relayed (its idle CPU is printed first; it is in that figure),
  and the system (kernel) part of it: socket reads and writes and polling, the
  floor that no change to Python code moves.

Every server gets a few warm-up streams first (imports and caches of a first
request are not what is measured). Before each run of C streams through a
gateway (ssegate's, ``--baseline``'s, LiteLLM's) C short streams fill its pool
of upstream connections, unmeasured: ``direct`` has its C connections open
before its run, and a gateway that has served C streams all along holds C; so
the figures are a gateway's steady state, not its first burst
(``--no-warm-pool``: each run opens its connections, a TCP connect and TLS
handshake for each, in its CPU and its TTFT). Then the targets of issue 12 at 1 000
streams, met or missed; and (not with ``--quick``) the gateway's CPU split into
a cost per stream and a cost per token, from runs of N and 3N tokens at 100
streams.

``--steady K`` replaces each burst by a gateway's steady state: C*K streams
arriving evenly over K streams' lengths (C/length starts a second), C of them
open at once from the first stream's end to the last one's start.

Then the built-in ``echo`` model (20 tokens/s per stream, no upstream) at
``--echo-streams`` streams: tokens/s delivered and CPU per token (medians of the
repeats; with ``--baseline`` its gateway's too, the runs interleaved).

``--baseline TREE`` runs a second ssegate gateway beside, from another source
tree (``TREE/src`` first on its ``PYTHONPATH``; e.g. ``git worktree add`` of an
older commit), as the column ``baseline``, with its own CPU split and echo
run (interleaved with the gateway's, and their ratios): a change's effect
measured side by side, under the same load, in one run.

The peer. LiteLLM's proxy is not one of ssegate's dependencies: ``make
bench-peers`` (which ``make bench`` runs) installs ``litellm[proxy]``, pinned,
into a venv of its own, ``.venv-litellm``, where its dependencies' versions do
not touch ssegate's; the benchmark finds it there (``--litellm-python PATH``:
another venv's Python; failing both, LiteLLM installed into this venv). It runs
beside the gateway, one worker, routing ``m`` to the same upstream on 127.0.0.1,
trusting its CA as above, and listening on 127.0.0.1 only (``litellm --config
FILE --host 127.0.0.1 --port P --num_workers 1``); it gets its own columns and
ratios. ``--no-litellm`` leaves it out and ``--quick`` too (its start alone
takes ~20 s), unless given ``--litellm``. Saturated at C > 100 it runs once, not
per repeat; every run is bounded (a stream not done ``--quick`` 20 s, else 30 s,
after its last token was due counts as what it delivered by then).

The stack's own cost. ``pipe_relay.py`` runs beside, column ``pipe`` (``--no-pipe``: not):
one process of uvicorn (uvloop, httptools) and aiohttp, as the gateway, that
posts each request's body to the upstream and forwards the upstream's bytes
untouched, and does nothing else (no validation, auth, routing, parsing, store,
resume, metrics or logs): what any relay on these libraries pays for the I/O
alone, under the same load, so the gateway's figures can be read against the
least its stack costs on this machine (the targets are checked for it too).
Where granian is installed (the ``bench`` extra) the same pipe served by granian
runs beside too, column ``granian`` (``--no-granian``: not): whether that floor is
uvicorn's or any Python ASGI server's.

How busy each relay was: every run samples, each 0.5 s, the relay's CPU and the
machine's busy CPUs (``Busy``); the table gives the relay's busiest 0.5 s in %
of one core (``peak CPU``) and the machine's busy CPUs then (``machine``, the
upstream and the load generator included). A relay at ~100 % there is saturated:
for that while what arrives waits for the core, and its latencies measure that
queue (the targets' lines say so).

The machine is shared and noisy: compare the columns of one run, not runs.
``--profile FILE`` records the gateway with py-spy (``pip install py-spy``) during
its busiest run (``--profile-at C``: the run of C streams) and prints its hottest
functions: where the CPU goes. ``--profile-native`` samples C frames too
(uvloop, TLS, the collector, the syscalls), which a Python-only profile lumps
into the event loop's own line; its pauses slow the profiled run somewhat.

    .venv/bin/python benchmarks/gateway.py            # C = 1, 100, 1000; 50 tokens; 3 repeats
    .venv/bin/python benchmarks/gateway.py --quick    # 10 tokens, 1 repeat, no LiteLLM
    .venv/bin/python benchmarks/gateway.py --streams 1000 --repeats 1 --profile /tmp/gw.raw
    .venv/bin/python benchmarks/gateway.py --streams 1000 --repeats 1 --tokens 150 \
        --no-litellm --profile /tmp/gw.raw --profile-native       # per-token costs, C frames too
    .venv/bin/python benchmarks/gateway.py --redis-url redis://127.0.0.1:6379/0  # on Redis
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from _report import Report
from fake_upstream import RATE, STAMP, make_certificate, run_upstream  # benchmarks/ is on sys.path

HERE = os.path.abspath(__file__)
LITELLM_KEY = "sk-bench-7f3a9c2e41d84b0a9e5f6c7d8e9fa0b1"  # its proxy refuses to start without


# -- the load generator ---------------------------------------------------------------

ECHO_TOKEN = re.compile(rb'"content": ?" ?tok"')


def run_load(
    port: int,
    streams: int,
    body: bytes,
    key: str,
    echo: bool,
    ramp: float,
    limit: float,
    out: str,
    cafile: str = "",
) -> None:
    """Read ``streams`` streams from ``port``; write the raw figures to ``out`` (JSON).

    With ``cafile`` over TLS, trusting that CA (the upstream read ``direct``): every
    connection is opened (handshake done) before the first request, so the floor is
    the upstream streaming over open connections, as the gateway's pool holds them.
    """
    import ssl

    import uvloop

    ctx = ssl.create_default_context(cafile=cafile) if cafile else None

    ttft: list[float] = []
    lateness: list[float] = []
    counts: list[int] = []
    done = [0]
    failed: list[str] = []
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\nauthorization: Bearer %s\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n" % (key.encode(), len(body)) + body
    )

    Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]

    async def one(delay: float, opened: Conn | BaseException | None) -> None:
        await asyncio.sleep(delay)
        got = 0
        writer = None
        try:
            if isinstance(opened, BaseException):
                raise opened
            began = time.monotonic()
            reader, writer = opened or await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            tail = b""
            status = b""
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                now = time.monotonic()
                if not status:
                    status = data[9:12]
                    if status != b"200":
                        failed.append(data[:200].decode("latin-1"))
                        break
                data = tail + data
                cut = data.rfind(b"\n")
                tail = data[cut + 1 :]
                if echo:
                    n = len(ECHO_TOKEN.findall(data, 0, cut + 1))
                    if n and not got:
                        ttft.append(now - began)
                    got += n
                else:
                    stamps = STAMP.findall(data, 0, cut + 1)
                    if stamps and not got:
                        ttft.append(now - began)
                        stamps = stamps[1:]
                        got = 1
                    lateness.extend(now - float(s) for s in stamps)
                    got += len(stamps)
                if b"data: [DONE]" in data:
                    done[0] += 1
                    break
        except OSError as exc:
            failed.append(repr(exc))
        finally:
            if writer is not None:
                writer.close()
            counts.append(got)

    async def main() -> float:
        opened: list[Any] = [None] * streams
        if ctx is not None:  # the handshakes first: not what a stream of the gateway pays
            opened = await asyncio.gather(
                *(asyncio.open_connection("127.0.0.1", port, ssl=ctx) for _ in range(streams)),
                return_exceptions=True,
            )
        began = time.monotonic()
        tasks = [asyncio.ensure_future(one(i * ramp / streams, opened[i])) for i in range(streams)]
        _, pending = await asyncio.wait(tasks, timeout=limit)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return time.monotonic() - began

    wall = uvloop.run(main())
    with open(out, "w") as f:
        json.dump(
            {
                "ttft": ttft,
                "lateness": lateness,
                "tokens": sum(counts),
                "done": done[0],
                "failed": failed[:3],
                "failures": len(failed),
                "wall": wall,
            },
            f,
        )


# -- the servers under test -----------------------------------------------------------


def gateway_config(path: str, upstream: str, echo_rate: float) -> None:
    with open(path, "w") as f:
        f.write(
            f'default_model = "up/m"\n'
            f"echo_tokens_per_second = {echo_rate}\n"
            "[limits]\nmax_streams_per_key = 100000\n"  # one client opens them all
            "[local]\npreload = false\n"
            f'[providers.up]\nkind = "openai"\nbase_url = "{upstream}/v1"\n'
            'api_key = "sk-upstream"\nmodels = ["m"]\n'
        )


def litellm_config(path: str, upstream: str) -> None:
    with open(path, "w") as f:
        f.write(
            "model_list:\n  - model_name: m\n    litellm_params:\n"
            f"      model: openai/m\n      api_base: {upstream}/v1\n      api_key: sk-upstream\n"
            f"general_settings:\n  master_key: {LITELLM_KEY}\n"
        )


#: Where ``make bench-peers`` installs LiteLLM: a venv of its own, its dependencies' versions apart.
LITELLM_VENV = os.path.join(os.path.dirname(os.path.dirname(HERE)), ".venv-litellm")


def litellm_available(python: str = "") -> str:
    """The ``litellm`` script beside the first of these Pythons that imports LiteLLM, or "".

    ``python`` alone if given (``--litellm-python``), else ``.venv-litellm``'s, else this one's.
    """
    for py in [python] if python else [os.path.join(LITELLM_VENV, "bin", "python"), sys.executable]:
        exe = os.path.join(os.path.dirname(os.path.abspath(py)), "litellm")
        version = "import importlib.metadata as m; print(m.version('litellm'))"
        if not os.access(exe, os.X_OK):
            continue
        found = subprocess.run([py, "-c", version], capture_output=True, text=True)
        if found.returncode == 0:
            print(f"LiteLLM {found.stdout.strip()}: {exe}")
            return exe
    return ""


# -- orchestration --------------------------------------------------------------------


class RedisMode:
    """``--redis-url URL``: every gateway of the run (``ssegate``, ``baseline``) keeps its
    streams in that Redis (``store`` = URL), the way replicas do, each under a key
    prefix of its own for this run (``redis_prefix``), deleted at the end: runs and
    gateways never see each other's keys. Off (the memory store) by default."""

    def __init__(self) -> None:
        self.url = ""
        self.run = f"ssegate-bench-{os.getpid()}-{int(time.time())}"

    def use(self, url: str, say: bool) -> None:
        self.url = url
        if url and say:
            print(f"store: Redis at {url}, keys under {self.run}:<gateway>: (deleted at the end)")

    def env(self, name: str) -> dict[str, str]:
        if not self.url or name not in ("gateway", "baseline"):
            return {}
        return {"SSEGATE_STORE": self.url, "SSEGATE_REDIS_PREFIX": f"{self.run}:{name}:"}

    def flush(self) -> None:
        if not self.url:
            return
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            keys = list(client.scan_iter(match=f"{self.run}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
        finally:
            client.close()


REDIS = RedisMode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def cpu_of(pid: int, kernel: bool = False) -> float:
    """The CPU seconds ``pid`` (and its children) used; ``kernel``: system time only."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.system if kernel else t.user + t.system
    return total


def load(
    port: int,
    streams: int,
    body: dict[str, Any],
    key: str,
    echo: bool,
    ramp: float,
    limit: float,
    cafile: str = "",
) -> dict[str, Any]:
    out = os.path.join(tempfile.gettempdir(), f"ssegate-bench-load-{os.getpid()}.json")
    subprocess.run(
        [
            sys.executable,
            HERE,
            "--role",
            "load",
            "--port",
            str(port),
            "--streams",
            str(streams),
            "--body",
            json.dumps(body),
            "--key",
            key,
            "--ramp",
            str(ramp),
            "--limit",
            str(limit),
            "--out",
            out,
            *(["--echo"] if echo else []),
            *(["--cafile", cafile] if cafile else []),
        ],
        timeout=limit + 30,
        check=True,
    )
    with open(out) as f:
        result = dict(json.load(f))
    os.unlink(out)
    return result


class Busy:
    """How busy the relay and the machine were during a run: sampled every ``window``
    seconds on a thread of this process (it only reads ``/proc``), the relay's busiest
    window (its CPU in it, as a share of one core) and the machine's busy CPUs in
    that same window (all processes: the upstream and the load generator too).

    A relay at ~100 % of a core in its busiest window is saturated: for a while what
    arrives waits for the core, whatever the code, and its latency figures measure that
    queue. A figure then says what the machine could not give, not what the relay adds."""

    def __init__(self, pid: int | None, window: float = 0.5) -> None:
        import threading

        self.pid = pid
        self.window = window
        self.peak = float("nan")
        self.machine = float("nan")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Busy:
        if self.pid:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.pid:
            self._thread.join()

    def _sample(self) -> None:
        import psutil

        def machine_busy() -> float:
            t = psutil.cpu_times()
            return sum(t) - t.idle - getattr(t, "iowait", 0.0)

        assert self.pid is not None
        peak, machine = 0.0, 0.0
        last_cpu, last_busy, last_at = cpu_of(self.pid), machine_busy(), time.monotonic()
        while not self._stop.wait(self.window):
            cpu, busy, at = cpu_of(self.pid), machine_busy(), time.monotonic()
            share = (cpu - last_cpu) / (at - last_at)
            if share > peak:
                peak, machine = share, (busy - last_busy) / (at - last_at)
            last_cpu, last_busy, last_at = cpu, busy, at
        self.peak, self.machine = peak, machine


def measure(
    target: str,
    port: int,
    pid: int | None,
    streams: int,
    tokens: int,
    ramp: float,
    limit: float,
    cafile: str = "",
) -> dict[str, float]:
    """One run of the load generator against ``target``; ``cafile``: over TLS."""
    echo = target == "echo"
    model = {
        "direct": "m",
        "litellm": "m",
        "pipe": "m",
        "granian": "m",
        "ssegate": "up/m",
        "baseline": "up/m",
        "echo": "echo",
    }[target]
    text = " ".join(["tok"] * tokens) if echo else "go"
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": tokens,
        "stream": True,
    }
    key = LITELLM_KEY if target == "litellm" else "sk-none"
    conns = upstream_connections()
    before = cpu_of(pid) if pid else 0.0
    before_sys = cpu_of(pid, kernel=True) if pid else 0.0
    with Busy(pid) as busy:
        r = load(port, streams, body, key, echo, ramp, limit, cafile)
    cpu = cpu_of(pid) - before if pid else float("nan")
    cpu_sys = cpu_of(pid, kernel=True) - before_sys if pid else float("nan")
    if r["failures"]:
        print(f"  {target} x{streams}: {r['failures']} failed, e.g. {r['failed'][0]!r}")
    return {
        "delivered": r["tokens"] / (streams * tokens),
        "complete": r["done"] / streams,
        "ttft50": pct(r["ttft"], 0.50) * 1000,
        "ttft99": pct(r["ttft"], 0.99) * 1000,
        "late50": pct(r["lateness"], 0.50) * 1000,
        "late99": pct(r["lateness"], 0.99) * 1000,
        "cpu_us": cpu / max(1, r["tokens"]) * 1e6,
        "sys_us": cpu_sys / max(1, r["tokens"]) * 1e6,
        "tokens_s": r["tokens"] / r["wall"],
        "cpu_share": cpu / r["wall"],
        "cpu_s": cpu,
        "new_conns": max(0, upstream_connections() - conns - 1) if conns else float("nan"),
        "peak": busy.peak,
        "machine": busy.machine,
    }


#: The upstream's port and CA file (``""``: plain HTTP), set once it is up.
UPSTREAM: dict[str, Any] = {}


def upstream_connections() -> int:
    """How many connections the upstream has accepted so far (its ``GET /stats``), this
    question's own included; 0 before it is up."""
    if not UPSTREAM:
        return 0
    import ssl

    scheme = "https" if UPSTREAM["cafile"] else "http"
    ctx = ssl.create_default_context(cafile=UPSTREAM["cafile"]) if UPSTREAM["cafile"] else None
    url = f"{scheme}://127.0.0.1:{UPSTREAM['port']}/stats"
    with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
        return int(json.load(r)["connections"])


def fill_pool(target: str, port: int, pid: int | None, streams: int, limit: float) -> None:
    """``streams`` short streams started within 0.25 s, not measured: the gateway's pool
    then holds ``streams`` open upstream connections, as a gateway serving that many
    streams all along does, and as ``direct`` opens its connections before its run."""
    measure(target, port, pid, streams, FILL_TOKENS, 0.25, limit)
    if pid:
        settle(pid)


def settle(pid: int, window: float = 0.2, quiet: float = 0.01, within: float = 5.0) -> None:
    """Wait (at most ``within`` s) until ``pid`` spends less than ``quiet`` s of CPU in a
    ``window`` (the kernel counts CPU time in 10 ms ticks): what a run left to do (its
    streams' ends, logs, collections) is done before the next run's CPU is counted."""
    end = time.monotonic() + within
    last = cpu_of(pid)
    while time.monotonic() < end:
        time.sleep(window)
        now = cpu_of(pid)
        if now - last < quiet:
            return
        last = now


#: A filling stream's tokens: it lasts 4 s, well beyond the 0.25 s its starts are spread
#: over, and beyond the time a saturated gateway takes to start a thousand streams, so they
#: all overlap and each holds a connection of its own.
FILL_TOKENS = 80


#: The bare pipes (``pipe_relay.py``): column -> its ``--server``.
PIPES = {"pipe": "uvicorn", "granian": "granian"}


def pipe_columns(uvicorn: bool, granian: bool | None) -> tuple[str, ...]:
    """The bare pipes to run: ``pipe`` (uvicorn) and ``granian`` (by default where installed)."""
    if granian is None:
        import importlib.util

        granian = importlib.util.find_spec("granian") is not None
    return (("pipe",) if uvicorn else ()) + (("granian",) if granian else ())


class Servers:
    """The upstream, the gateway and (if installed) LiteLLM, for one run."""

    def __init__(
        self,
        tokens: int,
        echo_rate: float,
        litellm: str,
        baseline: str = "",
        keep_alive: bool = True,
        tls: bool = True,
        pipes: tuple[str, ...] = (),
    ):
        self.dir = tempfile.mkdtemp(prefix="ssegate-bench-")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.up_port = free_port()
        # Over TLS every client of the upstream trusts its private CA: the load
        # generator by an ssl context, the gateways and LiteLLM by the environment.
        self.cafile = make_certificate(self.dir) if tls else ""
        self.trust = (
            {"SSL_CERT_FILE": self.cafile, "REQUESTS_CA_BUNDLE": self.cafile} if tls else {}
        )
        up = self.spawn(
            "upstream",
            [
                sys.executable,
                HERE,
                "--role",
                "upstream",
                "--port",
                str(self.up_port),
                "--tokens",
                str(tokens),
                "--upstream-keep-alive" if keep_alive else "--no-upstream-keep-alive",
                *(["--certdir", self.dir] if tls else []),
            ],
        )
        upstream = f"{'https' if tls else 'http'}://127.0.0.1:{self.up_port}"
        self.gw_port = free_port()
        cfg = os.path.join(self.dir, "gateway.toml")
        gateway_config(cfg, upstream, echo_rate)
        serve = [sys.executable, "-m", "ssegate", "serve", "--port", str(self.gw_port)]
        self.gw = self.spawn("gateway", [*serve, "--config", cfg])
        # Another ssegate's gateway (its source tree's src/ first on the path), same config.
        self.base: subprocess.Popen[bytes] | None = None
        self.base_port = free_port()
        if baseline:
            src = os.path.join(os.path.abspath(baseline), "src")
            self.base = self.spawn(
                "baseline",
                [*serve[:-1], str(self.base_port), "--config", cfg],
                {"PYTHONPATH": src},
            )
        # The stack's own cost (pipe_relay.py): uvicorn (and granian) and aiohttp forwarding
        # bytes untouched. Column -> (process, port).
        self.pipes: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        script = os.path.join(os.path.dirname(HERE), "pipe_relay.py")
        for column, server in PIPES.items():
            if column not in pipes:
                continue
            port = free_port()
            run = [sys.executable, script, "--port", str(port), "--upstream", upstream]
            self.pipes[column] = (self.spawn(column, [*run, "--server", server]), port)
        self.ll: subprocess.Popen[bytes] | None = None
        self.ll_port = free_port()
        if litellm:
            cfg = os.path.join(self.dir, "litellm.yaml")
            litellm_config(cfg, upstream)
            # Its own venv's script; on loopback only. Its environment is the others':
            # the upstream's CA trusted by SSL_CERT_FILE, no fetch of its price list (spawn).
            host = ["--host", "127.0.0.1", "--port", str(self.ll_port)]
            self.ll = self.spawn("litellm", [litellm, "--config", cfg, *host, "--num_workers", "1"])
        self.wait_port(self.up_port, up)
        UPSTREAM.update(port=self.up_port, cafile=self.cafile)
        wait_ready(f"http://127.0.0.1:{self.gw_port}/readyz", self.gw, 60)
        if self.base is not None:
            wait_ready(f"http://127.0.0.1:{self.base_port}/readyz", self.base, 60)
        for proc, port in self.pipes.values():
            self.wait_port(port, proc)
        if self.ll is not None:
            try:
                wait_ready(f"http://127.0.0.1:{self.ll_port}/health/liveliness", self.ll, 120)
            except RuntimeError as exc:
                print(f"LiteLLM left out: {exc} (log: {self.dir}/litellm.log)")
                self.stop(self.ll)
                self.ll = None

    def spawn(
        self, name: str, cmd: list[str], extra: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.dir, f"{name}.log"), "wb")  # noqa: SIM115
        # No fetch of LiteLLM's price list from the internet at start (it retries for 8 s).
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        env = {k: v for k, v in env.items() if not k.startswith("SSEGATE_")} | (extra or {})
        env |= self.trust
        env |= REDIS.env(name)
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(p)
        return p

    @staticmethod
    def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nothing listening on {port}")

    @staticmethod
    def stop(p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def close(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


def fmt_ms(v: float) -> str:
    return f"{v:.1f}" if v == v else "-"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--role", default="bench", choices=["bench", "upstream", "load"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=None, help="tokens per stream")
    ap.add_argument("--body", default="")
    ap.add_argument("--echo", action="store_true")
    ap.add_argument("--limit", type=float, default=120.0)
    ap.add_argument("--quick", action="store_true", help="short streams, one repeat")
    ap.add_argument("--streams", default="1,100,1000")
    ap.add_argument(
        "--echo-streams", type=int, default=1000, help="streams of the echo run (0: no echo run)"
    )
    ap.add_argument("--key", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--ramp", type=float, default=1.0, help="seconds over which streams start")
    ap.add_argument(
        "--steady",
        type=int,
        default=0,
        metavar="K",
        help="instead of C streams starting over --ramp: C*K streams arriving evenly over K "
        "streams' lengths, so that C are open at once from the first stream's end to the "
        "last one's start (a gateway's steady state, C/length starts a second)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--litellm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run LiteLLM's proxy beside (default: where installed, except with --quick)",
    )
    ap.add_argument(
        "--litellm-python",
        default="",
        metavar="PATH",
        help="the Python of the venv holding LiteLLM's proxy (default: .venv-litellm's, "
        "made by `make bench-peers`, else this one)",
    )
    ap.add_argument(
        "--upstream-keep-alive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the upstream keeps connections open between answers, as providers do "
        "(--no-upstream-keep-alive: it closes each, and every stream connects anew)",
    )
    ap.add_argument(
        "--warm-pool",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="before each gateway's run of C streams, C streams at once fill its pool of "
        "upstream connections, as direct's C connections are open before it starts "
        "(--no-warm-pool: the run opens them, a TLS handshake per new connection)",
    )
    ap.add_argument(
        "--upstream-tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the upstream serves HTTPS (a private CA's certificate, trusted by every client), "
        "as providers do (--no-upstream-tls: plain HTTP)",
    )
    ap.add_argument("--certdir", default="", help=argparse.SUPPRESS)
    ap.add_argument("--cafile", default="", help=argparse.SUPPRESS)
    ap.add_argument(
        "--baseline",
        default="",
        metavar="TREE",
        help="also run the gateway of another ssegate source tree (TREE/src), column 'baseline'",
    )
    ap.add_argument(
        "--pipe",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run pipe_relay.py beside, what any relay on this stack costs (uvicorn and "
        "aiohttp forwarding the upstream's bytes untouched), column 'pipe' (--no-pipe: not)",
    )
    ap.add_argument(
        "--granian",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run pipe_relay.py --server granian beside too, the same bare pipe on granian, "
        "column 'granian' (default: where granian is installed, as the bench extra does)",
    )
    ap.add_argument("--profile", default=None, help="py-spy the gateway's busiest run into FILE")
    ap.add_argument("--redis-url", default="", help="the gateways' store: this Redis (see REDIS)")
    ap.add_argument(
        "--profile-at",
        type=int,
        default=0,
        metavar="C",
        help="profile the run of C streams instead of the busiest",
    )
    ap.add_argument(
        "--profile-native",
        action="store_true",
        help="profile with py-spy --native: C frames too (uvloop, ssl, the parsers)",
    )
    args = ap.parse_args()
    if args.baseline and not os.path.isdir(os.path.join(args.baseline, "src", "ssegate")):
        # Else its gateway imports this venv's ssegate: this tree, measured twice.
        ap.error(f"--baseline {args.baseline}: no src/ssegate there")
    REDIS.use(args.redis_url, args.role == "bench")
    if args.role == "upstream":
        run_upstream(args.port, args.tokens or 50, args.certdir, args.upstream_keep_alive)
        return
    if args.role == "load":
        run_load(
            args.port,
            int(args.streams),
            args.body.encode(),
            args.key,
            args.echo,
            args.ramp,
            args.limit,
            args.out,
            args.cafile,
        )
        return

    tokens = args.tokens or (10 if args.quick else 50)  # 0.5 s or 2.5 s per stream
    repeats = 1 if args.quick else args.repeats
    counts = [int(c) for c in args.streams.split(",")]
    slack = 20.0 if args.quick else 30.0  # a stream not done this long after its due end fails
    limit = args.ramp + tokens / RATE + slack
    wanted = args.litellm if args.litellm is not None else not args.quick
    litellm = litellm_available(args.litellm_python) if wanted else ""
    print(
        f"gateway benchmark: {tokens} tokens/stream at {RATE:.0f} tokens/s, "
        + (
            f"steady arrivals ({args.steady} streams' lengths)"
            if args.steady
            else f"starts spread over {args.ramp:g} s"
        )
        + f", {repeats} repeat(s), upstream over "
        f"{'HTTPS' if args.upstream_tls else 'plain HTTP'}, keep-alive "
        f"{'on' if args.upstream_keep_alive else 'off'}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} (a shared machine: compare the columns of this run)"
    )
    if wanted and not litellm:
        print("LiteLLM not run: `make bench-peers` installs it (into .venv-litellm) to compare")
    servers = Servers(
        tokens,
        RATE,
        litellm,
        args.baseline,
        args.upstream_keep_alive,
        args.upstream_tls,
        pipe_columns(args.pipe, args.granian),
    )
    try:
        idle = {"ssegate": servers.gw.pid} | ({"litellm": servers.ll.pid} if servers.ll else {})
        if servers.base is not None:
            idle["baseline"] = servers.base.pid
        for column, (proc, _) in servers.pipes.items():
            idle[column] = proc.pid
        before = {t: cpu_of(pid) for t, pid in idle.items()}
        idle_s = 1.0 if args.quick else 2.0
        time.sleep(idle_s)
        print(
            "idle CPU (in every CPU figure below): "
            + ", ".join(
                f"{t} {(cpu_of(p) - before[t]) / idle_s * 100:.1f}% of a core"
                for t, p in idle.items()
            )
        )
        # target -> (port, pid, CA file): only ``direct`` reads the upstream itself.
        ports = {
            "direct": (servers.up_port, None, servers.cafile),
            "ssegate": (servers.gw_port, servers.gw.pid, ""),
        }
        if servers.base is not None:
            ports["baseline"] = (servers.base_port, servers.base.pid, "")
        for column, (proc, port) in servers.pipes.items():
            ports[column] = (port, proc.pid, "")
        if servers.ll is not None:
            ports["litellm"] = (servers.ll_port, servers.ll.pid, "")
        for t, (port, pid, ca) in ports.items():  # warm up: first-request imports and caches
            measure(t, port, pid, 2, 2, 0.0, 30.0, ca)
        measure("echo", servers.gw_port, servers.gw.pid, 2, 2, 0.0, 30.0)
        charts = Report("gateway", "The gateway relaying a provider's stream, beside its peers.")
        for streams in counts:
            results: dict[str, list[dict[str, float]]] = {t: [] for t in ports}
            for n in range(repeats):
                for t, (port, pid, ca) in ports.items():  # interleaved: drifting load hits all
                    if t == "litellm" and streams > 100 and n:
                        continue  # saturated: once is enough to show it, and it takes long
                    if args.warm_pool and t != "direct":
                        fill_pool(t, port, pid, streams, limit)
                    spy = None
                    profiled = args.profile_at or max(counts)
                    if args.profile and t == "ssegate" and streams == profiled and not n:
                        spy = py_spy(servers.gw.pid, args.profile, args.profile_native)
                    if args.steady:
                        total, ramp = streams * args.steady, args.steady * tokens / RATE
                        run = measure(t, port, pid, total, tokens, ramp, limit + ramp, ca)
                    else:
                        run = measure(t, port, pid, streams, tokens, args.ramp, limit, ca)
                    results[t].append(run)
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(120)  # --native: symbols resolved at the end
            med = {
                t: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                for t, rs in results.items()
            }
            if args.steady:
                print(
                    f"\n(steady: {streams * args.steady} streams arriving evenly over "
                    f"{args.steady * tokens / RATE:g} s, {streams / (tokens / RATE):.0f} a "
                    f"second; {streams} open at once once the first has ended)"
                )
            report(streams, med)
            peers = {t: m for t, m in med.items() if t != "direct"}
            charts.table(
                f"{streams} concurrent streams: gateway CPU per token",
                "CPU us/token",
                {t: m["cpu_us"] for t, m in peers.items()},
                ours="ssegate",
                higher_is_better=False,
                words=("cheaper", "costlier"),
            )
            charts.table(
                f"{streams} concurrent streams: time to first token, p99",
                "ms",
                {t: m["ttft99"] for t, m in med.items()},
                ours="ssegate",
                higher_is_better=False,
            )
            if streams == 1000:
                targets(med)
        gateways = {"gateway": (servers.gw_port, servers.gw.pid)}
        if servers.base is not None:
            gateways["baseline"] = (servers.base_port, servers.base.pid)
        relays = dict(gateways)
        for column, (proc, port) in servers.pipes.items():
            relays[column] = (port, proc.pid)
        if not args.quick:
            split = 100 if 100 in counts else max(counts)
            cpu_split(relays, split, tokens, args.ramp, limit, repeats, args.warm_pool)
        echo_runs: dict[str, list[dict[str, float]]] = {name: [] for name in gateways}
        for _ in range(repeats if args.echo_streams > 0 else 0):  # --echo-streams 0: none
            for name, (port, pid) in gateways.items():  # interleaved, as above
                echo_runs[name].append(
                    measure("echo", port, pid, args.echo_streams, tokens, args.ramp, limit)
                )
        if args.echo_streams > 0:
            print(
                f"\necho model, {args.echo_streams} streams x {tokens} tokens at {RATE:.0f}/s "
                f"(medians of {repeats}):"
            )
        for name, runs in echo_runs.items():
            if not runs:
                continue
            echo = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            ratio = ""
            if name != "gateway":
                ours = statistics.median(r["cpu_us"] for r in echo_runs["gateway"])
                ratio = f"; gateway's CPU/token {ours / echo['cpu_us']:.2f}x this"
            print(
                f"  {name}: {echo['delivered'] * 100:.1f}% delivered, "
                f"{echo['tokens_s']:.0f} tokens/s, TTFT p50 {echo['ttft50']:.1f} ms "
                f"p99 {echo['ttft99']:.1f} ms, CPU {echo['cpu_us']:.1f} us/token "
                f"({echo['cpu_share'] * 100:.0f}% of a core){ratio}"
            )
        charts.save()
    finally:
        servers.close()
        REDIS.flush()
    print(f"load average after: {os.getloadavg()[0]:.1f}; server logs in {servers.dir}")
    if args.profile:
        summarize_profile(args.profile)


def cpu_split(
    gateways: dict[str, tuple[int, int]],
    streams: int,
    tokens: int,
    ramp: float,
    limit: float,
    repeats: int,
    warm: bool = True,
) -> None:
    """Each gateway's CPU per stream as ``a + b * tokens``: a stream's own cost, a token's.

    From runs of ``tokens`` and ``3 * tokens`` per stream, ``repeats`` pairs per
    gateway (``name -> (port, pid)``), interleaved; medians, and ratios to ``gateway``.
    """
    split: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in gateways}
    for _ in range(repeats):
        for name, (port, pid) in gateways.items():
            per_stream, per_token = split[name]
            if warm:
                fill_pool("ssegate", port, pid, streams, limit)
            short, long = (
                measure("ssegate", port, pid, streams, n, ramp, limit + n / RATE)["cpu_s"]
                for n in (tokens, 3 * tokens)
            )
            per_token.append((long - short) / (streams * 2 * tokens))
            per_stream.append(short / streams - per_token[-1] * tokens)
    ours = [statistics.median(v) for v in split["gateway"]]
    for name, (per_stream, per_token) in split.items():
        stream_s, token_s = statistics.median(per_stream), statistics.median(per_token)
        ratio = ""
        if name != "gateway":
            ratio = f" (gateway's: {ours[0] / stream_s:.2f}x, {ours[1] / token_s:.2f}x)"
        print(
            f"\n{name} CPU at {streams} streams, {tokens} then {3 * tokens} tokens each "
            f"(median of {repeats}): {stream_s * 1e3:.2f} ms per stream "
            f"(request, upstream call, setup) + {token_s * 1e6:.0f} us per relayed token{ratio}"
        )


def py_spy(pid: int, path: str, native: bool = False) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if exe is None:
        print("no profile: pip install py-spy into this venv")
        return None
    cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "--output", path]
    # --native cannot sample without pausing the process (py-spy refuses
    # --nonblocking with it): the pauses then slow the profiled run a little.
    cmd += ["--native"] if native else ["--nonblocking"]
    spy = subprocess.Popen(
        [*cmd, "--rate", "200"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached before the load starts
    return spy


#: Where a sample of the gateway belongs: the first of these its stack shows, else "other".
STAGES = [
    # Seen in --profile-native profiles only (C frames): the kernel's and the collector's part.
    ("collector (gc)", r"gc_collect"),
    ("kernel: socket writes (to clients)", r"(^|;)write \(libc"),
    ("kernel: socket reads, polling", r"(^|;)(read|epoll_wait|epoll_pwait) \(libc"),
    ("TLS (uvloop's sslproto, ssl)", r"SSLProtocol__do_read|SSLObject\.(read|write)|_ssl__"),
    (
        "worker threads (FastAPI runs sync dependencies there)",
        r"WorkerThread\.run|run_in_threadpool",
    ),
    ("logging (access log, per-stream line)", r"Logger\.(info|_log)"),
    ("new connections (uvicorn)", r"connection_made"),
    # A resumed coroutine's stack starts where it resumed: name the inner frames too.
    ("upstream: connect, read, parse SSE + JSON", r"Runner\._produce|drive_batches|_wire\.py"),
    ("store: append, wake readers", r"Hub\._run|StreamStore\.append|MemoryStore"),
    (
        "to clients: render, SSE session, middleware, uvicorn send",
        r"Reader\.__call__|_reading\.py|_session\.py|_loops\.py|RequestResponseCycle\.send|\.send \(",
    ),
    ("request: routing, validation, dependencies, endpoint", r"request_response|APIRoute"),
    ("task plumbing (anyio cancel scopes, task groups)", r"CancelScope|TaskGroup|_task_repr"),
    ("event loop itself (uvloop, callbacks)", r"Runner\.run \("),
]


def summarize_profile(path: str, top: int = 12) -> None:
    """Where the gateway's samples went: by stage, and its hottest functions."""
    own: dict[str, int] = {}
    stages: dict[str, int] = {}
    total = 0
    try:
        with open(path) as f:
            for line in f:
                stack, _, n = line.rstrip().rpartition(" ")
                if not stack:
                    continue
                count = int(n)
                total += count
                frames = [
                    re.sub(r" \(.*?/(site-packages|src)/", " (", fr) for fr in stack.split(";")
                ]
                own[frames[-1]] = own.get(frames[-1], 0) + count
                stage = next((t for t, pat in STAGES if re.search(pat, stack)), "other")
                stages[stage] = stages.get(stage, 0) + count
    except OSError as exc:
        print(f"no profile at {path}: {exc}")
        return
    print(f"\ngateway profile, busiest run ({total} samples; raw stacks in {path}):")
    for title, table, rows in (("by stage", stages, len(stages)), ("own time", own, top)):
        print(f"  {title}:")
        for name, n in sorted(table.items(), key=lambda kv: -kv[1])[:rows]:
            print(f"    {n / max(1, total) * 100:5.1f}%  {name}")


#: A relay's busiest 0.5 s at this share of a core or more: saturated (``Busy``; the
#: kernel counts CPU time in 10 ms ticks, so a full core reads 0.96 to 1.04).
SATURATED = 0.95


def targets(med: dict[str, dict[str, float]]) -> None:
    """The issue's targets at 1 000 streams, one gateway process: met or not (and by
    the stack's bare relay, ``pipe``, where it ran)."""
    d = med["direct"]
    for name, label in (
        ("ssegate", "targets"),
        ("pipe", "the same for the bare pipe"),
        ("granian", "the same for the bare pipe on granian"),
    ):
        if name not in med:
            continue
        g = med[name]
        ttft, late = g["ttft50"] - d["ttft50"], g["late99"] - d["late99"]
        checks = [
            ("100 % delivered", f"{g['delivered'] * 100:.1f} %", g["delivered"] >= 1.0),
            ("added TTFT p50 <= 2 ms", f"{ttft:+.1f} ms", ttft <= 2),
            ("added per-token p99 <= 5 ms", f"{late:+.1f} ms", late <= 5),
            ("gateway CPU <= 50 us/token", f"{g['cpu_us']:.0f} us", g["cpu_us"] <= 50),
        ]
        verdicts = "; ".join(f"{t}: {v} {'met' if ok else 'MISSED'}" for t, v, ok in checks)
        print(f"{label}: {verdicts}")
        if g["peak"] >= SATURATED:
            print(
                f"  ({name} saturated: its busiest 0.5 s took {g['peak'] * 100:.0f} % of a core, "
                f"{g['machine']:.2f} of the machine's {os.cpu_count()} CPUs busy then; "
                "the latencies above are mostly waiting for a core)"
            )
    if d["late99"] > 50 or d["delivered"] < 1.0:
        print(
            f"  (not a fair test of them: read direct, the upstream itself was {d['late99']:.0f} ms "
            "late at p99, so this machine could not drive this load; 'added' is then noise)"
        )


def report(streams: int, med: dict[str, dict[str, float]]) -> None:
    d = med["direct"]
    print(f"\n{streams} concurrent streams ({streams * RATE:.0f} tokens/s due)")
    print(
        f"{'':9}{'delivered':>10}{'TTFT p50':>9}{'p99':>9}{'+p50':>9}{'+p99':>9}"
        f"{'late p50':>9}{'p99':>9}{'+p50':>9}{'+p99':>9}{'CPU us/tok':>11}{'of it sys':>10}"
        f"{'CPU ratio':>10}{'peak CPU':>9}{'machine':>8}"
    )
    ours = med["ssegate"]["cpu_us"]
    for t, m in med.items():
        added = t != "direct"
        cols = [
            f"{m['delivered'] * 100:>9.1f}%",
            f"{m['ttft50']:>9.1f}",
            f"{m['ttft99']:>9.1f}",
            f"{m['ttft50'] - d['ttft50']:>+9.1f}" if added else f"{'':>9}",
            f"{m['ttft99'] - d['ttft99']:>+9.1f}" if added else f"{'':>9}",
            f"{m['late50']:>9.1f}",
            f"{m['late99']:>9.1f}",
            f"{m['late50'] - d['late50']:>+9.1f}" if added else f"{'':>9}",
            f"{m['late99'] - d['late99']:>+9.1f}" if added else f"{'':>9}",
            f"{m['cpu_us']:>11.1f}" if added else f"{'-':>11}",
            f"{m['sys_us']:>10.1f}" if added else f"{'-':>10}",
            f"{m['cpu_us'] / ours:>9.1f}x" if added and ours else f"{'':>10}",
            f"{m['peak'] * 100:>8.0f}%" if added else f"{'-':>9}",
            f"{m['machine']:>8.2f}" if added else f"{'-':>8}",
        ]
        print(f"{t:9}" + "".join(cols))
    print(
        "(ms; '+' = added over direct; 'of it sys': the kernel's part (socket reads and "
        "writes, polling); CPU ratio = CPU per token / ssegate's; peak CPU: the relay's "
        f"busiest 0.5 s, in % of one core; machine: the CPUs busy then, of {os.cpu_count()}, "
        "the upstream's and the load generator's included)"
    )
    opened = ", ".join(f"{t} {m['new_conns']:.0f}" for t, m in med.items() if t != "direct")
    print(f"new upstream connections opened during the run (TCP + TLS each): {opened}")


if __name__ == "__main__":
    main()
