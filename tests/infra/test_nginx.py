"""Two gateway replicas behind a real nginx, configured exactly as the README
says (its ``nginx`` snippet is the site this test runs, ports aside), sharing a
Redis Cluster of three masters: the README's scale-out, whole.

The echo model is paced at one token every 2.5 s, longer than the 2 s
``proxy_read_timeout`` this nginx is given (the README's users keep the 60 s
default): a silent upstream is cut by nginx unless keep-alive comments (every
0.25 s here) flow. Which replica served a request is read from nginx's access
log (``$upstream_addr``)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gateway_support import events, free_port, seq, ssegate_serve

from ssegate import Decoder, Event
from ssegate.testing._nginx import Nginx, readme_site

pytestmark = pytest.mark.redis

README = Path(__file__).parents[2] / "README.md"
#: The only setting the test adds: a read timeout shorter than the model's silence.
READ_TIMEOUT = "proxy_read_timeout 2s;"
PACE = 0.4  # tokens per second: 2.5 s of silence before each token
KEEP_ALIVE = 0.25


def readme_snippet() -> str:
    (block,) = re.findall(r"```nginx\n(.*?)```", README.read_text(), re.DOTALL)
    return str(block)


@dataclass
class Balanced:
    url: str  # nginx
    replicas: list[str]
    nginx: Nginx

    def served_by(self, path: str) -> list[str]:
        """The replica (its URL) that served each finished request for ``path``, in order."""
        return [
            "http://" + upstream
            for _, uri, upstream, _ in self.nginx.access_log()
            if uri.split("?")[0] == path
        ]


@pytest.fixture(scope="module")
def balanced(
    redis_cluster_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Balanced]:
    prefix = f"ssegate-test:{uuid.uuid4().hex[:12]}:"  # the cluster is the session's
    config = tmp_path_factory.mktemp("nginx") / "replica.toml"
    config.write_text(
        f'default_model = "echo"\nredis_prefix = "{prefix}"\n'
        f"echo_tokens_per_second = {PACE}\nkeep_alive = {KEEP_ALIVE}\n"
        "[local]\npreload = false\n"
    )
    with ExitStack() as stack:
        # started side by side: each takes seconds to import and become ready
        with ThreadPoolExecutor(2) as pool:
            serving = [
                ssegate_serve(str(config), "--redis-url", redis_cluster_url) for _ in range(2)
            ]
            replicas = [url for url, _ in pool.map(stack.enter_context, serving)]
        port = free_port()
        nginx = stack.enter_context(
            Nginx(readme_site(README.read_text(), replicas, port), port=port, extra=READ_TIMEOUT)
        )
        yield Balanced(nginx.url, replicas, nginx)
        assert "upstream timed out" not in nginx.error_log()


def chat(words: str) -> dict[str, object]:
    return {"model": "echo", "stream": True, "messages": [{"role": "user", "content": words}]}


def test_the_readme_snippet_adds_no_proxy_setting() -> None:
    # Buffering is turned off per response (X-Accel-Buffering: no) and the read
    # timeout left at its default: the snippet is a plain proxy_pass.
    location = re.search(r"location / \{(.*?)\}", readme_snippet(), re.DOTALL)
    assert location is not None
    assert location.group(1).split() == ["proxy_pass", "http://ssegate;"]


def test_the_first_token_passes_nginx_unbuffered(balanced: Balanced) -> None:
    """The first token reaches the client while the generation still runs: stopped
    on receipt of it, the stream ends without the other five (a buffering proxy
    would deliver nothing before the end, so all six)."""
    with httpx.stream(
        "POST", balanced.url + "/v1/chat/completions", json=chat("one two three four five six"),
        timeout=30,
    ) as response:  # fmt: skip
        decoder = Decoder()
        got: list[Event] = []
        stopped = False
        for chunk in response.iter_raw():
            got += decoder.feed(chunk)
            if not stopped and any('"content":"one"' in e.data for e in got):
                stream = response.headers["x-stream-id"]
                assert httpx.delete(f"{balanced.url}/v1/streams/{stream}").status_code == 204
                stopped = True
    assert stopped
    assert [_summary(e.data) for e in got] == ["", "one", "error: cancelled", "[DONE]"]


def _summary(data: str) -> str | None:
    """An OpenAI chunk in short: its content, or the code of its error."""
    if data == "[DONE]":
        return data
    chunk = json.loads(data)
    if "error" in chunk:
        return f"error: {chunk['error'].get('code')}"
    return chunk["choices"][0]["delta"].get("content")


def test_keep_alives_hold_a_silent_stream_past_the_read_timeout(balanced: Balanced) -> None:
    started = httpx.post(balanced.url + "/v1/streams", json=chat("think harder"))
    assert started.status_code == 201
    path = started.json()["events_url"]
    with httpx.stream("GET", balanced.url + path, timeout=30) as response:
        assert response.status_code == 200
        body = response.read().decode()
    got = events(httpx.Response(200, content=body.encode()))
    assert [(e.event, e.data) for e in got if e.event == "token"] == [
        ("token", '{"text": "think"}'),
        ("token", '{"text": " harder"}'),
    ]
    assert got[-1].event == "done"
    # 2.5 s of silence before each token, filled with comments (": " lines)
    assert body.count("\n:") + body.startswith(":") >= 2


def test_a_reconnect_resumes_on_the_other_replica(balanced: Balanced) -> None:
    started = httpx.post(balanced.url + "/v1/streams", json=chat("one two"))
    path = started.json()["events_url"]
    with httpx.stream("GET", balanced.url + path, timeout=30) as response:
        decoder = Decoder()
        before: list[Event] = []
        for chunk in response.iter_raw():
            before += decoder.feed(chunk)
            if before:
                break  # the connection drops after the first token
    assert [(e.event, e.data) for e in before] == [("token", '{"text": "one"}')]
    resumed = events(
        httpx.get(balanced.url + path, headers={"Last-Event-ID": before[-1].id}, timeout=30)
    )
    whole = events(httpx.get(balanced.url + path, timeout=30))
    assert before + resumed == whole
    assert [json.loads(e.data)["text"] for e in whole if e.event == "token"] == ["one", " two"]
    assert seq(resumed[0].id) == seq(before[-1].id) + 1
    deadline = time.monotonic() + 10
    while len(served := balanced.served_by(path)) < 3:  # logged as each one finishes
        assert time.monotonic() < deadline, balanced.nginx.access_log()
        time.sleep(0.05)
    # round robin: the reconnect went to the replica the cut GET did not reach
    assert sorted(served[:2]) == sorted(balanced.replicas)
