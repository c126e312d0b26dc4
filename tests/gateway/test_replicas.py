"""Two gateway replicas sharing Redis act as one: a stream started on one is read
and resumed on the other, a topic published on one reaches subscribers of the
other, and a replica killed mid-generation leaves its readers an ``error`` event
when its lease runs out, never a hang. Replica A is a real ``ssegate serve``
process (so it can be killed), replica B a gateway in this process."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_support import events, seq

from serve_support import ssegate_serve
from ssegate.testing import FakeUpstream, Reply

pytestmark = pytest.mark.redis

SLOW = {"model": "echo", "messages": [{"role": "user", "content": "w " * 200}]}
SHORT = {"model": "echo", "messages": [{"role": "user", "content": "one two three"}]}


@pytest.fixture
def replica_a(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    config = tmp_path / "a.toml"
    config.write_text(
        f'default_model = "echo"\nredis_prefix = "{redis_prefix}"\n'
        "lease_ttl = 2.0\ndetach_grace = 60\necho_tokens_per_second = 20\n"
        "[local]\npreload = false\n"
    )
    with ssegate_serve(str(config), "--redis-url", redis_url) as running:
        yield running


@pytest.fixture
def replica_b(gateway, redis_url: str, redis_prefix: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with gateway(store=redis_url, redis_prefix=redis_prefix, lease_ttl=2.0) as server:
        yield server.url


def test_started_on_one_read_and_resumed_on_the_other(replica_a, replica_b: str) -> None:  # type: ignore[no-untyped-def]
    url_a, _ = replica_a
    started = httpx.post(url_a + "/v1/streams", json=SHORT)
    assert started.status_code == 201
    path = started.json()["events_url"]
    on_a = events(httpx.get(url_a + path + "?format=openai", timeout=30))
    on_b = events(httpx.get(replica_b + path + "?format=openai", timeout=30))
    assert on_b == on_a
    assert on_b[-1].data == "[DONE]"
    middle = on_a[2].id
    resumed = events(
        httpx.get(replica_b + path + "?format=openai", headers={"Last-Event-ID": middle})
    )
    assert resumed == [e for e in on_a if seq(e.id) > seq(middle)]
    # chat on B, resumed on A by the Link the answer names
    chat = httpx.post(replica_b + "/v1/chat/completions", json={**SHORT, "stream": True})
    link = chat.headers["link"].split(">")[0].lstrip("<")
    whole = events(chat)
    assert events(httpx.get(url_a + link, headers={"Last-Event-ID": whole[0].id})) == whole[1:]


def test_a_topic_reaches_subscribers_on_every_replica(replica_a, replica_b: str) -> None:  # type: ignore[no-untyped-def]
    url_a, _ = replica_a
    first = httpx.post(url_a + "/v1/topics/alerts", json={"data": "one", "id": "k1"}).json()["id"]
    # re-sent to the other replica: the same event, not a second one
    again = httpx.post(replica_b + "/v1/topics/alerts", json={"data": "one", "id": "k1"}).json()
    assert again == {"topic": "alerts", "id": first, "duplicate": True}
    second = httpx.post(replica_b + "/v1/topics/alerts", json={"data": "two"}).json()["id"]
    for url in (url_a, replica_b):
        with httpx.stream("GET", url + "/v1/topics/alerts?last_event_id=") as response:
            lines = response.iter_lines()
            got = [next(lines) for _ in range(7)]
        assert got == [
            "retry: 1000",  # a browser's EventSource reconnects after 1 s
            f"id: {first}",
            "data: one",
            "",
            f"id: {second}",
            "data: two",
            "",
        ]


def test_a_killed_replica_leaves_its_readers_an_error_event(replica_a, replica_b: str) -> None:  # type: ignore[no-untyped-def]
    url_a, process = replica_a
    path = httpx.post(url_a + "/v1/streams", json=SLOW).json()["events_url"]
    with httpx.stream("GET", replica_b + path, timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines) == "event: token"  # following it on B while A generates
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed_at = time.monotonic()
        rest = list(lines)  # ends: no hang
        ended_after = time.monotonic() - killed_at
    error = rest[-4:-1]
    assert error[0] == "event: error"
    assert json.loads(error[2].removeprefix("data: ")) == {
        "code": "producer_lost",
        "message": "The process producing this stream stopped before finishing it.",
        "retryable": False,
    }
    # the lease (2 s), the hub's lease check (every 1 s), and room for a busy machine
    assert ended_after < 2.0 + 1.0 + 3.0


def test_workers_share_redis(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    config = tmp_path / "w.toml"
    config.write_text(
        f'default_model = "echo"\nredis_prefix = "{redis_prefix}"\n[local]\npreload = false\n'
    )
    with ssegate_serve(str(config), "--redis-url", redis_url, "--workers", "2") as (url, _):
        path = httpx.post(url + "/v1/streams", json=SHORT).json()["events_url"]
        reads = [events(httpx.get(url + path, timeout=30)) for _ in range(4)]
    assert all(read == reads[0] for read in reads)  # whichever worker answered
    assert [e.event for e in reads[0]] == ["token", "token", "token", "usage", "done"]


def test_a_reader_on_another_replica_holds_the_generation(
    tmp_path: Path, redis_url: str, redis_prefix: str, replica_b: str
) -> None:
    config = tmp_path / "a.toml"
    config.write_text(
        f'default_model = "echo"\nredis_prefix = "{redis_prefix}"\ndetach_grace = 0.5\n'
        "echo_tokens_per_second = 20\n[local]\npreload = false\n"
    )
    body = {"model": "echo", "messages": [{"role": "user", "content": " ".join(["w"] * 40)}]}
    with ssegate_serve(str(config), "--redis-url", redis_url) as (url_a, _):
        path = httpx.post(url_a + "/v1/streams", json=body).json()["events_url"]
        # read only on B, for 2 s (four grace periods of A)
        got = events(httpx.get(replica_b + path, timeout=30))
    assert [e.event for e in got].count("token") == 40
    assert got[-1].event == "done"


def test_delete_on_another_replica_closes_the_upstream_within_a_second(
    tmp_path: Path, redis_url: str, redis_prefix: str, replica_b: str
) -> None:
    capture = Reply.load(Path(__file__).parent.parent / "llm" / "captures" / "openai_text.http")
    upstream = FakeUpstream()
    upstream.add(
        "/v1/chat/completions",
        Reply(capture.status, capture.headers, capture.chunks[:2], hold=True),
    )
    config = tmp_path / "a.toml"
    with upstream.run() as upstream_url:
        config.write_text(
            f'default_model = "echo"\nredis_prefix = "{redis_prefix}"\n[local]\npreload = false\n'
            f'[providers.fake]\nkind = "openai"\nbase_url = "{upstream_url}/v1"\napi_key = "sk-x"\n'
        )
        body = {"model": "fake/m1", "messages": [{"role": "user", "content": "hi"}]}
        with ssegate_serve(str(config), "--redis-url", redis_url) as (url_a, _):
            path = httpx.post(url_a + "/v1/streams", json=body).json()["events_url"]
            with httpx.stream("GET", replica_b + path, timeout=30) as response:
                lines = response.iter_lines()
                assert next(lines) == "event: token"  # A is generating, the upstream held open
                stopped_at = time.monotonic()
                assert httpx.delete(replica_b + path).status_code == 204
                assert upstream.wait_disconnected(5)
                rest = list(lines)
    assert upstream.disconnected_at is not None
    assert upstream.disconnected_at - stopped_at < 1.0
    assert rest[-4] == "event: error"
    assert '"code": "cancelled"' in rest[-2]
