"""Limits against hostile or careless clients, through the real HTTP stack: with
auth off each client address has its own share of generations; garbage resume ids
and unknown streams are clear 4xx; one key cannot create topics without end."""

from __future__ import annotations

import gc
import http.client
import tracemalloc
from collections.abc import Callable

import httpx

SLOW = {"model": "echo", "messages": [{"role": "user", "content": "w " * 1000}]}


def client_from(address: str) -> httpx.Client:
    """A client whose connections leave from ``address`` (any of 127.0.0.0/8)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def test_with_auth_off_the_stream_limit_is_per_client_address(gateway) -> None:  # type: ignore[no-untyped-def]
    with (
        gateway(limits={"max_streams_per_key": 2}, echo_tokens_per_second=1.0) as server,
        client_from("127.0.0.1") as greedy,
        client_from("127.0.0.2") as other,
    ):
        url = server.url + "/v1/streams"
        assert [greedy.post(url, json=SLOW).status_code for _ in range(2)] == [201, 201]
        refused = greedy.post(url, json=SLOW)
        assert refused.status_code == 429
        assert refused.json()["error"] == {
            "message": "This client address runs 2 generations already; wait for one to finish.",
            "type": "rate_limit_error",
            "code": "too_many_streams",
            "param": None,
        }
        # Another address is not starved by the greedy one.
        assert [other.post(url, json=SLOW).status_code for _ in range(3)] == [201, 201, 429]


def retained_growth(work: Callable[[], None]) -> int:
    """Bytes still held after ``work()`` (by every thread: the server's too).

    ``work`` should use ``http.client``, which keeps nothing between requests
    (httpx fills caches of its own that would blur the figure)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_one_key_cannot_create_topics_without_end(gateway) -> None:  # type: ignore[no-untyped-def]
    keys = [
        {"id": "greedy", "key": "greedy-key-0123456789", "scopes": ["publish"]},
        {"id": "other", "key": "other-key-01234567890", "scopes": ["publish"]},
    ]
    greedy = {"authorization": "Bearer greedy-key-0123456789", "content-type": "application/json"}
    with gateway(keys=keys, limits={"max_topics_per_key": 20}) as server, httpx.Client() as web:

        def publish(topic: str, headers: dict[str, str] = greedy) -> httpx.Response:
            return web.post(f"{server.url}/v1/topics/{topic}", json={"data": "x"}, headers=headers)

        assert {publish(f"t/{i}").status_code for i in range(20)} == {200}
        refused = publish("t/20")
        assert refused.status_code == 429
        assert refused.json()["error"] == {
            "message": "This key created 20 topics already (limits.max_topics_per_key); "
            "'t/20' would be one more. Publish to the topics it has.",
            "type": "rate_limit_error",
            "code": "too_many_topics",
            "param": "topic",
        }
        assert publish("t/3").status_code == 200  # its own topics: still served
        other = {"authorization": "Bearer other-key-01234567890"}
        assert publish("t/20", other).status_code == 200  # another key has its own share
        # Hundreds more attempts keep nothing: memory stays where it was (without
        # the limit these 300 topics hold ~390 kB; refused, ~10 kB of warm-up).
        connection = http.client.HTTPConnection("127.0.0.1", server.port)

        def attempts() -> None:
            for i in range(300):
                connection.request("POST", f"/v1/topics/u/{i}", b'{"data":"x"}', greedy)
                assert connection.getresponse().read().startswith(b'{"error"')

        grown = retained_growth(attempts)
        connection.close()
        assert grown < 64 * 1024, grown
        subscribe = web.get(f"{server.url}/v1/topics/u/7", headers=greedy)
        assert subscribe.status_code == 403  # (publish-only key) nothing was written either
