"""Redis restarted mid-stream under a gateway (store = Redis).

A ``redis-server`` of the test's own (never the shared one), with an
append-only file synced on every write: what Redis acknowledged survives the
restart. While it is down, writers (``POST /v1/streams``, a topic publish) and
new readers get a clear 503 ``store_unavailable`` with ``Retry-After``; a
reader already following a stream waits (keep-alives) and never hangs. When
it is back, new generations run and read whole; the generation that was
running when Redis went away could not write its next token, so its readers
get ``producer_lost`` once its lease (3 s) runs out, after every event Redis
acknowledged, none missing, none twice.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import threading
import time

import httpx
import pytest
from faults_support import Gateway, Reassembly, events

from ssegate import Decoder
from ssegate.testing._redis import RedisServer

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

ECHO = {"model": "echo", "messages": [{"role": "user", "content": " ".join(["w"] * 400)}]}
SHORT = {"model": "echo", "messages": [{"role": "user", "content": "one two three"}]}


def test_redis_restarted_mid_stream(gateway: Gateway) -> None:
    with RedisServer(appendonly=True) as redis:
        settings = {"store": redis.url, "lease_ttl": 3.0, "echo_tokens_per_second": 20.0}
        with gateway(**settings, keep_alive=0.5) as url:
            path = httpx.post(url + "/v1/streams", json=ECHO).json()["events_url"]
            followed = Reassembly()
            lines: list[str] = []

            def follow() -> None:
                decoder = Decoder()
                with httpx.stream("GET", url + path, timeout=30) as response:
                    for chunk in response.iter_bytes():
                        lines.extend(chunk.decode().splitlines())
                        for event in decoder.feed(chunk):
                            if followed.add(event):
                                return

            reader = threading.Thread(target=follow)
            reader.start()
            _until(lambda: len(followed.ids) >= 5, "tokens before the restart")
            redis.stop()
            down_at = time.monotonic()

            # writers and new readers: a clear 503, never a 500 or a hang
            for method, target, body in [
                ("POST", "/v1/streams", SHORT),
                ("POST", "/v1/chat/completions", {**SHORT, "stream": True}),
                ("POST", "/v1/topics/news", {"data": "x"}),
                ("GET", path, None),
                ("GET", "/v1/topics/news", None),
            ]:
                reply = httpx.request(method, url + target, json=body, timeout=10)
                assert reply.status_code == 503, (target, reply.text)
                assert reply.headers["retry-after"] == "1"
                assert reply.json()["error"]["code"] == "store_unavailable", target
            assert httpx.get(url + "/readyz").status_code == 503
            kept_alive = len(lines)
            _until(lambda: len(lines) > kept_alive, "a keep-alive while Redis is down")
            assert reader.is_alive()

            redis.start()
            back_at = time.monotonic()
            # writers recover: a new generation runs and reads whole
            _until(lambda: httpx.get(url + "/readyz").status_code == 200, "ready again")
            # /readyz got through on one pooled connection; the others, the old
            # server's, are opened again before their next use: the very next
            # request runs (each used to fail its first use with a 503).
            started = httpx.post(url + "/v1/streams", json=SHORT)
            assert started.status_code == 201, started.text
            fresh = events(httpx.get(url + started.json()["events_url"], timeout=30))
            assert [e.event for e in fresh] == ["token", "token", "token", "usage", "done"]

            reader.join(30)
            assert not reader.is_alive(), "the reader of the interrupted stream hangs"
            ended_after = time.monotonic() - back_at
            history = events(httpx.get(url + path, timeout=30))
        # the reader got every acknowledged event, once, then the error
        stored = Reassembly()
        for event in history:
            stored.add(event)
        assert stored.ids == list(range(2, 2 + len(stored.ids)))
        assert (followed.ids, followed.text) == (stored.ids, stored.text)
        assert followed.error == stored.error
        assert followed.error is not None
        assert followed.error["code"] == "producer_lost"
        print(
            f"\nRedis restart: down {back_at - down_at:.1f} s; the interrupted stream kept "
            f"{len(stored.ids)} acknowledged tokens, all read once; its reader got "
            f"producer_lost {ended_after:.1f} s after Redis was back"
        )
        assert json.loads(history[-1].data)["code"] == "producer_lost"


def test_redis_restarted_while_the_gateway_is_idle(gateway: Gateway) -> None:
    # Nothing runs while Redis is away, so nothing finds out: the gateway's pooled
    # connections are the old server's when the next requests come.
    with RedisServer(appendonly=True) as redis, gateway(store=redis.url) as url:

        def start(_: int) -> httpx.Response:
            return httpx.post(url + "/v1/streams", json=SHORT)

        def last_event(started: httpx.Response) -> str:
            return events(httpx.get(url + started.json()["events_url"], timeout=30))[-1].event

        with concurrent.futures.ThreadPoolExecutor(4) as pool:  # a few pooled connections
            before = list(pool.map(start, range(4)))
        assert [r.status_code for r in before] == [201] * 4
        assert [last_event(r) for r in before] == ["done"] * 4
        redis.stop(kill=True)
        redis.start()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:  # the first requests after
            after = list(pool.map(start, range(4)))
        assert [r.status_code for r in after] == [201] * 4, [r.text for r in after]
        assert [last_event(r) for r in after] == ["done"] * 4


def _until(condition, what: str, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.05)
