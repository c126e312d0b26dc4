"""GET /v1/dashboard/events: live snapshots of what the gateway runs, ops scope only."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from ssegate import Decoder

OPS = "ops-key-0123456789abcdef"
CHAT = "chat-key-0123456789abcdef"
KEYS = [
    {"id": "ops", "key": OPS, "scopes": ["ops"]},
    {"id": "chat", "key": CHAT, "scopes": ["chat", "publish", "subscribe:*"]},
]


@contextmanager
def snapshots(url: str, **headers: str) -> Iterator[Callable[[], dict[str, Any]]]:
    """``next_snapshot()`` over one open /v1/dashboard/events connection."""
    with httpx.stream(
        "GET", url + "/v1/dashboard/events?interval=0.2", headers=headers, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = response.iter_bytes()
        decoder = Decoder()
        pending: list[Any] = []

        def next_snapshot() -> dict[str, Any]:
            while not pending:
                pending.extend(decoder.feed(next(chunks)))
            event = pending.pop(0)
            assert event.event == "snapshot"
            assert event.id == ""  # nothing to resume: the current figures only
            figures: dict[str, Any] = json.loads(event.data)
            return figures

        yield next_snapshot


def test_snapshots_show_generations_and_readers(gateway) -> None:  # type: ignore[no-untyped-def]
    with gateway(keys=KEYS) as server, snapshots(server.url, authorization=f"Bearer {OPS}") as nxt:
        first = nxt()
        assert first == {
            "window_s": 60,
            "active_streams": 0,
            "stream_readers": 0,
            "topic_subscribers": 0,
            "tokens_per_s": 0.0,
            "series": [0] * 60,
            "models": [],
            "interval_s": 0.2,
        }
        chat = {"authorization": f"Bearer {CHAT}"}
        words = "one two three four five six seven eight"
        answer = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": words}]},
            headers=chat,
        )
        assert answer.json()["choices"][0]["message"]["content"] == words
        with httpx.stream("GET", server.url + "/v1/topics/news", headers=chat) as topic:
            assert topic.status_code == 200
            snap = nxt()
            while snap["topic_subscribers"] != 1:
                snap = nxt()
        (echo,) = snap["models"]
        assert echo["model"] == "echo"
        assert echo["active"] == 0
        assert echo["ttft_ms"]["n"] == 1
        assert echo["itl_ms"]["n"] == 7  # 8 tokens: one first, seven gaps
        assert echo["ttft_ms"]["p50"] is not None
        # Each token counts in the second it came, in the series once that second is over.
        for _ in range(15):
            if sum(echo["series"]) == 8:
                break
            (echo,) = nxt()["models"]
        assert sum(echo["series"]) == 8
        assert echo["tokens"] == 8
        assert snap["active_streams"] == 0
        assert snap["stream_readers"] == 0


def test_the_feed_needs_the_ops_scope(gateway) -> None:  # type: ignore[no-untyped-def]
    with gateway(keys=KEYS) as server:
        url = server.url + "/v1/dashboard/events"
        missing = httpx.get(url)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "missing_api_key"
        chat = httpx.get(url, headers={"authorization": f"Bearer {CHAT}"})
        assert chat.status_code == 403
        assert chat.json()["error"]["message"] == "This API key lacks the scope 'ops'."
        with snapshots(server.url + "", authorization=f"Bearer {OPS}") as nxt:
            assert nxt()["active_streams"] == 0
        bad = httpx.get(url + "?interval=0", headers={"authorization": f"Bearer {OPS}"})
        assert bad.status_code == 422
        assert bad.json()["error"]["param"] == "interval"


def test_a_running_generation_is_counted_while_it_runs(gateway) -> None:  # type: ignore[no-untyped-def]
    with gateway(echo_tokens_per_second=40.0) as server, snapshots(server.url) as nxt:
        body = {
            "model": "echo",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 400,
        }
        started = httpx.post(server.url + "/v1/streams", json=body)
        assert started.status_code == 201
        stream = started.json()["id"]
        with httpx.stream("GET", f"{server.url}/v1/streams/{stream}") as reader:
            assert reader.status_code == 200
            snap = nxt()
            while not (snap["stream_readers"] == 1 and snap["models"]):
                snap = nxt()
            assert snap["active_streams"] == 1
            assert snap["models"][0]["active"] == 1
            assert httpx.delete(f"{server.url}/v1/streams/{stream}").status_code == 204
        snap = nxt()
        while snap["active_streams"] or snap["stream_readers"]:
            snap = nxt()
        assert snap["models"][0]["active"] == 0
