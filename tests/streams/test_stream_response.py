"""stream_response() behind a real uvicorn: resume, 204, errors, gaps, live."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ssegate import Decoder, Event
from ssegate.streams import Hub, MemoryStore, stream_response
from ssegate.testing import serve


def make_app(via_hub: bool, store: MemoryStore) -> Starlette:
    hubs: list[Hub] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if via_hub:
            async with Hub(store) as hub:
                hubs.append(hub)
                yield
        else:
            yield

    async def follow(request: Request) -> Response:
        source = hubs[0] if via_hub else store
        missing_ok = request.query_params.get("missing_ok") == "1"
        name = request.path_params["name"]
        return await stream_response(source, name, request, missing_ok=missing_ok, ping=None)

    async def append(request: Request) -> Response:
        data = (await request.body()).decode()
        event = request.query_params.get("event", "message")
        return PlainTextResponse(
            await store.append(request.path_params["name"], Event(data, event))
        )

    async def end(request: Request) -> Response:
        await store.end(request.path_params["name"], request.query_params.get("outcome", "done"))
        return PlainTextResponse("ok")

    async def lease(request: Request) -> Response:
        await store.acquire_lease(request.path_params["name"], 0.05)
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/s/{name}", follow, methods=["GET"]),
            Route("/s/{name}", append, methods=["POST"]),
            Route("/s/{name}/end", end, methods=["POST"]),
            Route("/s/{name}/lease", lease, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


@pytest.fixture(params=["store", "hub"], scope="module")
def client(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    store = MemoryStore(max_len=4, poll_interval=0.02)
    with (
        serve(make_app(request.param == "hub", store), lifespan="on") as server,
        httpx.Client(base_url=server.url, timeout=20) as http,
    ):
        yield http


def publish(client: httpx.Client, name: str, *data: str, end: str | None = None) -> None:
    for item in data:
        client.post(f"/s/{name}", content=item).raise_for_status()
    if end is not None:
        client.post(f"/s/{name}/end", params={"outcome": end}).raise_for_status()


def test_replays_after_the_last_event_id_header(client: httpx.Client) -> None:
    publish(client, "a", "one", "two", "three", end="done")
    response = client.get("/s/a", headers={"Last-Event-ID": "000000000001"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content == b"id: 000000000002\ndata: two\n\nid: 000000000003\ndata: three\n\n"


def test_the_query_parameter_works_and_the_header_wins(client: httpx.Client) -> None:
    publish(client, "b", "one", "two", "three", end="done")
    query = client.get("/s/b", params={"last_event_id": "000000000002"})
    assert query.content == b"id: 000000000003\ndata: three\n\n"
    both = client.get(
        "/s/b", params={"last_event_id": "000000000002"}, headers={"Last-Event-ID": "000000000001"}
    )
    assert both.content.startswith(b"id: 000000000002\n")


def test_a_finished_stream_with_nothing_after_the_id_answers_204(client: httpx.Client) -> None:
    publish(client, "c", "one", end="done")
    response = client.get("/s/c", headers={"Last-Event-ID": "000000000001"})
    assert (response.status_code, response.content) == (204, b"")
    client.post("/s/c-empty/lease")  # creates it with a lease
    client.post("/s/c-empty/end").raise_for_status()
    assert client.get("/s/c-empty").status_code == 204


def test_errors_are_json_answers(client: httpx.Client) -> None:
    missing = client.get("/s/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "stream_not_found"
    publish(client, "d", "one")
    for bad in ("x", "000000000002"):
        response = client.get("/s/d", headers={"Last-Event-ID": bad})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "unknown_event_id"
    invalid = client.get("/s/-bad-")
    assert invalid.status_code == 400
    assert invalid.json()["error"]["code"] == "invalid_stream"
    publish(client, "d", end="done")


def test_trimmed_history_sends_a_gap_event_without_an_id(client: httpx.Client) -> None:
    publish(client, "e", *[str(i) for i in range(1, 8)], end="done")  # max_len is 4
    response = client.get("/s/e", headers={"Last-Event-ID": "000000000001"})
    assert response.content == (
        b'event: gap\ndata: {"after":"000000000001","first_id":"000000000004","missed":2}\n\n'
        b"id: 000000000004\ndata: 4\n\nid: 000000000005\ndata: 5\n\n"
        b"id: 000000000006\ndata: 6\n\nid: 000000000007\ndata: 7\n\n"
    )


def test_a_stream_whose_producer_died_ends_with_an_error_event(client: httpx.Client) -> None:
    client.post("/s/f/lease").raise_for_status()  # a 50 ms lease nobody renews
    publish(client, "f", "partial")
    response = client.get("/s/f")  # waits for the lease to run out, then ends
    assert response.content == (
        b"id: 000000000001\ndata: partial\n\n"
        b'event: error\ndata: {"code":"producer_lost","message":"The process producing this'
        b' stream stopped before finishing it.","retryable":false}\n\n'
    )
    assert client.get("/s/f", headers={"Last-Event-ID": "000000000001"}).status_code == 204


def test_follows_live_until_the_end(client: httpx.Client) -> None:
    decoder = Decoder()
    received: list[Event] = []
    with client.stream("GET", "/s/live", params={"missing_ok": "1"}) as response:
        assert response.status_code == 200  # headers at once, before any event
        publish(client, "live", "hello")
        chunks = response.iter_bytes()
        while not received:
            received += decoder.feed(next(chunks))
        publish(client, "live", "world", end="done")
        for chunk in chunks:
            received += decoder.feed(chunk)
    assert received == [
        Event("hello", id="000000000001"),
        Event("world", id="000000000002"),
    ]
