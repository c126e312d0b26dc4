"""Limits: body size (413), concurrent generations per key (429 + Retry-After),
malformed bodies (422) — never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

BODY = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def test_body_over_the_limit_is_413_whether_announced_or_chunked(gateway) -> None:  # type: ignore[no-untyped-def]
    with gateway(limits={"max_body_bytes": 200}) as server:
        url = server.url + "/v1/chat/completions"
        big = {**BODY, "messages": [{"role": "user", "content": "x" * 300}]}
        announced = httpx.post(url, json=big)
        assert announced.status_code == 413
        assert announced.json()["error"] == {
            "message": "The request body is larger than 200 bytes.",
            "type": "invalid_request_error",
            "code": "request_too_large",
            "param": None,
        }

        def chunks() -> Iterator[bytes]:
            for _ in range(10):
                yield b"x" * 50

        chunked = httpx.post(url, content=chunks(), headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        assert httpx.post(url, json=BODY).status_code == 200  # under the limit: served


def test_too_many_generations_per_key_is_429_with_retry_after(gateway) -> None:  # type: ignore[no-untyped-def]
    slow = {"model": "echo", "messages": [{"role": "user", "content": "w " * 1000}]}
    with gateway(limits={"max_streams_per_key": 2}, echo_tokens_per_second=1.0) as server:
        first = httpx.post(server.url + "/v1/streams", json=slow)
        second = httpx.post(server.url + "/v1/streams", json=slow)
        assert (first.status_code, second.status_code) == (201, 201)
        third = httpx.post(server.url + "/v1/chat/completions", json={**slow, "stream": True})
        assert third.status_code == 429
        assert third.headers["retry-after"] == "1"
        assert third.json()["error"]["code"] == "too_many_streams"
        assert httpx.delete(server.url + first.json()["events_url"]).status_code == 204
        fourth = httpx.post(server.url + "/v1/streams", json=slow)
        assert fourth.status_code == 201  # a slot came free


def test_malformed_bodies_are_422_never_500(echo_url: str) -> None:
    url = echo_url + "/v1/chat/completions"
    cases = [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_value"),
        (b'"text"', "invalid_value"),
        (b"", "invalid_value"),
        (b"\xff\xfe", "invalid_json"),
        (b"v\x7f\xf2", "invalid_json"),  # not UTF-8 (FastAPI's own answer was a bare 400)
    ]
    for content, code in cases:
        response = httpx.post(url, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 422, content
        assert response.json()["error"]["code"] == code, content
    unknown = httpx.get(echo_url + "/v1/nothing")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "no route GET /v1/nothing"
    wrong_method = httpx.put(url, json=BODY)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"
