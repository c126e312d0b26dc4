"""Chaos resume: 1 000 generations read through a proxy that cuts connections at
random, several times per stream; every reader resumes with ``Last-Event-ID``
and the reassembled text is exactly what the generation produced.

- 950 on ``echo`` (deterministic: the answer is the prompt), paced so most are
  still generating when they are cut; 50 on ``local`` (a few tokens each,
  greedy), compared with an uncut run of the same prompt.
- Readers: ssegate's ``AsyncEventSource`` (native format by ``GET``, and the
  OpenAI format by ``POST /v1/chat/completions``, resumed by the ``Link`` the
  answer names), ``EventSource`` in threads, and ssegate.js's ``stream()``
  under Node (``chaos_reader.mjs``: by ``GET`` and by ``POST``).
- The proxy's cuts are seeded (``SEED``), counted from the end of the response
  head (a ``POST``'s head names where to resume), half of them FIN, half RST,
  at most ``MAX_CUTS`` per stream URL (so a reader always gets through).

It prints streams, connections, cuts, tokens lost and repeated (``-s``);
docs/RELIABILITY.md quotes them.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from faults_support import Reassembly, config, events

import ssegate
from proxy_support import CuttingProxy
from serve_support import ssegate_serve
from ssegate import Event
from ssegate.gateway._echo import words
from ssegate.protocol import ReconnectPolicy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).parent.parent.parent
NODE_READER = Path(__file__).parent / "chaos_reader.mjs"

SEED = 15
STREAMS = 1000
LOCAL = 50
LOCAL_PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "What is 2+2?", "Greet me."]
LOCAL_TOKENS = 4
SYNC = 50  # echo streams read by EventSource in threads
NODE = 50  # echo streams read by ssegate.js under Node (half by GET, half by POST)
POSTED = 200  # echo streams read in the OpenAI format, started by the POST itself
AT_ONCE = 250  # streams in flight together
CUT_CHANCE = 0.85  # a connection is cut with this chance...
CUT_WITHIN = 400  # ...after 1..CUT_WITHIN bytes of its body
MAX_CUTS = 4  # a stream's reader is cut this many times at most (then it gets through)

VOCABULARY = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


def _plan(seed: int) -> Callable[[int], int | None]:
    rng = random.Random(seed)
    lock = threading.Lock()

    def plan(n: int) -> int | None:
        with lock:
            return rng.randrange(1, CUT_WITHIN) if rng.random() < CUT_CHANCE else None

    return plan


def _policy() -> ReconnectPolicy:
    # Reconnect at once-ish: the default (3 s, like browsers) would only make the test long.
    return ReconnectPolicy(retry_ms=20, max_retries=30, max_delay=0.5)


class Stream:
    """One generation of the test: what to ask, and what its reader got."""

    def __init__(self, n: int, model: str, prompt: str, how: str, max_tokens: int | None) -> None:
        self.n = n
        self.model = model
        self.prompt = prompt
        # "get" (native, async), "post" (openai, async), "sync" (native),
        # "node-get" (native), "node-post" (openai)
        self.how = how
        self.max_tokens = max_tokens
        self.got = Reassembly("openai" if how.endswith("post") else "native")
        self.log: list[Any] = []

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": self.prompt}],
        }
        if self.max_tokens is not None:
            body.update(max_tokens=self.max_tokens, temperature=0)
        return body

    def count(self, response: httpx.Response) -> None:
        self.got.connections += 1
        self.log.append((round(time.monotonic(), 2), response.status_code, str(response.url)[-60:]))

    def retried(self, delay: float, error: Exception | None) -> None:
        self.log.append((round(time.monotonic(), 2), delay, repr(error)[:80]))


def _streams(rng: random.Random) -> list[Stream]:
    streams = []
    for n in range(STREAMS - LOCAL):
        text = f"s{n}" + "".join(" " + rng.choice(VOCABULARY) for _ in range(rng.randrange(5, 10)))
        how = (
            "sync"
            if n < SYNC
            else "post"
            if n < SYNC + POSTED
            else "node-get"
            if n < SYNC + POSTED + NODE // 2
            else "node-post"
            if n < SYNC + POSTED + NODE
            else "get"
        )
        streams.append(Stream(n, "echo", text, how, None))
    for n in range(LOCAL):
        prompt = LOCAL_PROMPTS[n % len(LOCAL_PROMPTS)]
        streams.append(Stream(STREAMS - LOCAL + n, "local", prompt, "get", LOCAL_TOKENS))
    rng.shuffle(streams)
    return streams


async def _read_async(
    stream: Stream, direct: str, proxy: str, client: httpx.AsyncClient, starter: httpx.AsyncClient
) -> None:
    if stream.how == "post":
        source = ssegate.AsyncEventSource(
            proxy + "/v1/chat/completions",
            method="POST",
            json={**stream.body, "stream": True},
            client=client,
            policy=_policy(),
            on_response=stream.count,
            on_reconnect=stream.retried,
        )
    else:
        started = await starter.post(direct + "/v1/streams", json=stream.body)
        assert started.status_code == 201, started.text
        source = ssegate.AsyncEventSource(
            proxy + started.json()["events_url"],
            client=client,
            policy=_policy(),
            on_response=stream.count,
            on_reconnect=stream.retried,
        )
    async with source:
        async for event in source:
            if stream.got.add(event):
                break


def _read_sync(stream: Stream, direct: str, proxy: str) -> None:
    started = httpx.post(direct + "/v1/streams", json=stream.body, timeout=60)
    assert started.status_code == 201, started.text
    with ssegate.EventSource(
        proxy + started.json()["events_url"], policy=_policy(), on_response=stream.count
    ) as source:
        for event in source:
            if stream.got.add(event):
                break


async def _read_node(
    streams: list[Stream], direct: str, proxy: str, starter: httpx.AsyncClient
) -> None:
    """Read ``streams`` with ssegate.js under Node, all at once in one process."""
    jobs: list[dict[str, Any]] = []
    for stream in streams:
        if stream.how == "node-post":
            jobs.append(
                {
                    "url": proxy + "/v1/chat/completions",
                    "method": "POST",
                    "body": {**stream.body, "stream": True},
                }
            )
        else:
            started = await starter.post(direct + "/v1/streams", json=stream.body)
            assert started.status_code == 201, started.text
            jobs.append({"url": proxy + started.json()["events_url"]})
    with anyio.fail_after(120):
        done = await anyio.run_process(
            [_node(), str(NODE_READER)], input=json.dumps(jobs).encode(), check=True
        )
    for stream, result in zip(streams, json.loads(done.stdout), strict=True):
        assert result["error"] is None, f"stream {stream.n}: {result['error']}"
        stream.got.connections = result["connections"]
        for event in result["events"]:
            if stream.got.add(Event(event["data"], event["event"], event["id"])):
                break


def _node() -> str:
    """Node.js (scripts/ensure-node-deps installs it where missing, as make test-js does)."""
    found = shutil.which("node")
    if found is None:
        subprocess.run([str(ROOT / "scripts" / "ensure-node-deps")], check=True)
        found = shutil.which("node")
    assert found is not None
    return found


async def _uncut(direct: str) -> dict[str, Reassembly]:
    """The local model's greedy answer to each prompt, read whole, no proxy."""
    answers = {}
    async with httpx.AsyncClient(timeout=120) as client:
        for prompt in LOCAL_PROMPTS:
            stream = Stream(0, "local", prompt, "get", LOCAL_TOKENS)
            started = await client.post(direct + "/v1/streams", json=stream.body)
            reply = await client.get(direct + started.json()["events_url"])
            for event in events(reply):
                stream.got.add(event)
            assert stream.got.end == "done"
            answers[prompt] = stream.got
    return answers


def test_a_thousand_streams_cut_at_random_lose_and_repeat_nothing(tmp_path: Path) -> None:
    path = config(
        tmp_path / "chaos.toml",
        "echo_tokens_per_second = 100",
        f"limits = {{ max_streams_per_key = {AT_ONCE} }}",
        "[local]",
        "preload = false",
        "max_concurrency = 4",
    )
    streams = _streams(random.Random(SEED))
    with (
        ssegate_serve(path) as (direct, _),
        CuttingProxy(
            int(direct.rpartition(":")[2]), _plan(SEED), from_body=True, max_cuts=MAX_CUTS
        ) as proxy,
    ):
        uncut = anyio.run(_uncut, direct)
        started = time.monotonic()

        async def main() -> None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=AT_ONCE)
            gate = anyio.Semaphore(AT_ONCE)
            threads = anyio.CapacityLimiter(SYNC)
            # Starting streams: a new connection each (a kept-alive one that the
            # server closes as it is reused would be an error of the test's own).
            once = httpx.Limits(max_keepalive_connections=0)
            async with (
                httpx.AsyncClient(timeout=60, limits=limits) as client,
                httpx.AsyncClient(timeout=60, limits=once) as starter,
            ):

                async def one(stream: Stream) -> None:
                    async with gate:
                        try:
                            with anyio.fail_after(90):
                                if stream.how == "sync":
                                    await anyio.to_thread.run_sync(
                                        _read_sync, stream, direct, proxy.url, limiter=threads
                                    )
                                else:
                                    await _read_async(stream, direct, proxy.url, client, starter)
                        except TimeoutError:
                            raise AssertionError(
                                f"stream {stream.n} hangs: {vars(stream)}"
                            ) from None

                async with anyio.create_task_group() as group:
                    node = [s for s in streams if s.how.startswith("node")]
                    group.start_soon(_read_node, node, direct, proxy.url, starter)
                    for stream in streams:
                        if not stream.how.startswith("node"):
                            group.start_soon(one, stream)

        anyio.run(main)
        elapsed = time.monotonic() - started
        connections, cuts = proxy.connections, proxy.cuts

    lost = repeated = tokens = 0
    for stream in streams:
        got = stream.got
        if stream.model == "echo":
            expected, n_expected = stream.prompt, len(words(stream.prompt))
            end = "[DONE]" if stream.how.endswith("post") else "done"
        else:
            expected, n_expected = uncut[stream.prompt].text, len(uncut[stream.prompt].ids)
            end = "done"
        tokens += n_expected
        lost += got.lost(n_expected)
        repeated += got.repeated
        assert (got.text, got.end, got.error) == (expected, end, None), f"stream {stream.n}"
        assert got.ids == sorted(set(got.ids)), f"stream {stream.n}: ids in order, once each"
    reconnects = sum(s.got.connections for s in streams) - len(streams)
    print(
        f"\nchaos resume (seed {SEED}): {len(streams)} streams ({LOCAL} local), "
        f"{tokens} tokens, {connections} connections, {cuts} cut, {reconnects} reconnects, "
        f"{lost} tokens lost, {repeated} repeated, {elapsed:.1f} s"
    )
    assert (lost, repeated) == (0, 0)
    assert cuts >= 1.5 * len(streams)  # cut more than once per stream, on average
