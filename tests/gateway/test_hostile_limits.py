"""Limits against hostile or careless clients, through the real HTTP stack: with
auth off each client address has its own share of generations; garbage resume ids
and unknown streams are clear 4xx; one key cannot create topics without end."""

from __future__ import annotations

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
