"""stream_response() behind a real uvicorn: resume, 204, errors, gaps, live."""

from __future__ import annotations

import functools
import operator
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from streams_support import Ids

from ssegate import Decoder, Event, EventSource, ReconnectPolicy
from ssegate.streams import Hub, MemoryStore, StreamInfo, default_transform, stream_response
from ssegate.streams._sse import _callable
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

    async def epoch(request: Request) -> Response:
        return PlainTextResponse((await store.info(request.path_params["name"])).epoch)

    return Starlette(
        routes=[
            Route("/s/{name}", follow, methods=["GET"]),
            Route("/s/{name}", append, methods=["POST"]),
            Route("/s/{name}/end", end, methods=["POST"]),
            Route("/s/{name}/lease", lease, methods=["POST"]),
            Route("/s/{name}/epoch", epoch, methods=["GET"]),
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


def publish(client: httpx.Client, name: str, *data: str, end: str | None = None) -> Ids:
    """Append ``data`` to ``name`` (and end it); the ids of that stream."""
    for item in data:
        client.post(f"/s/{name}", content=item).raise_for_status()
    if end is not None:
        client.post(f"/s/{name}/end", params={"outcome": end}).raise_for_status()
    return ids(client, name)


def ids(client: httpx.Client, name: str) -> Ids:
    response = client.get(f"/s/{name}/epoch")
    response.raise_for_status()
    return Ids(response.text)


def error_event(code: str, message: str, event_id: str) -> bytes:
    return (
        f'event: error\nid: {event_id}\ndata: {{"code":"{code}","message":"{message}",'
        f'"retryable":false}}\n\n'
    ).encode()


PRODUCER_LOST = "The process producing this stream stopped before finishing it."


def test_replays_after_the_last_event_id_header(client: httpx.Client) -> None:
    _id = publish(client, "a", "one", "two", "three", end="done")
    response = client.get("/s/a", headers={"Last-Event-ID": _id(1)})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content == (
        f"id: {_id(2)}\ndata: two\n\nid: {_id(3)}\ndata: three\n\n".encode()
    )


def test_the_query_parameter_works_and_the_header_wins(client: httpx.Client) -> None:
    _id = publish(client, "b", "one", "two", "three", end="done")
    query = client.get("/s/b", params={"last_event_id": _id(2)})
    assert query.content == f"id: {_id(3)}\ndata: three\n\n".encode()
    both = client.get("/s/b", params={"last_event_id": _id(2)}, headers={"Last-Event-ID": _id(1)})
    assert both.content.startswith(f"id: {_id(2)}\n".encode())


def test_a_finished_stream_with_nothing_after_the_id_answers_204(client: httpx.Client) -> None:
    _id = publish(client, "c", "one", end="done")
    response = client.get("/s/c", headers={"Last-Event-ID": _id(1)})
    assert (response.status_code, response.content) == (204, b"")
    # The end's own id (the number after the last event) is nothing-after too.
    assert client.get("/s/c", headers={"Last-Event-ID": _id(2)}).status_code == 204
    client.post("/s/c-empty/lease")  # creates it with a lease
    client.post("/s/c-empty/end").raise_for_status()
    assert client.get("/s/c-empty").status_code == 204


def test_errors_are_json_answers(client: httpx.Client) -> None:
    missing = client.get("/s/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "stream_not_found"
    _id = publish(client, "d", "one")
    for bad in ("x", "000000000001", _id(2)):
        response = client.get("/s/d", headers={"Last-Event-ID": bad})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "unknown_event_id"
    invalid = client.get("/s/-bad-")
    assert invalid.status_code == 400
    assert invalid.json()["error"]["code"] == "invalid_stream"
    publish(client, "d", end="done")


def test_an_id_of_another_stream_is_refused_with_a_message_saying_so(
    client: httpx.Client,
) -> None:
    mine = publish(client, "h", "one", "two", "three")
    other = publish(client, "h-other", "one", "two")
    response = client.get("/s/h", headers={"Last-Event-ID": other(1)})  # in range for h
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "unknown_event_id",
            "message": f"{other(1)!r} is from another stream, or from an earlier stream named "
            f"'h': this stream's ids start with '{mine.epoch}-'",
        }
    }
    publish(client, "h", end="done")
    publish(client, "h-other", end="done")


def test_trimmed_history_sends_a_gap_event_without_an_id(client: httpx.Client) -> None:
    _id = publish(client, "e", *[str(i) for i in range(1, 8)], end="done")  # max_len is 4
    response = client.get("/s/e", headers={"Last-Event-ID": _id(1)})
    assert (
        response.content
        == (
            f'event: gap\ndata: {{"after":"{_id(1)}","first_id":"{_id(4)}","missed":2}}\n\n'
            f"id: {_id(4)}\ndata: 4\n\nid: {_id(5)}\ndata: 5\n\n"
            f"id: {_id(6)}\ndata: 6\n\nid: {_id(7)}\ndata: 7\n\n"
        ).encode()
    )


def test_a_stream_whose_producer_died_ends_with_an_error_event(client: httpx.Client) -> None:
    client.post("/s/f/lease").raise_for_status()  # a 50 ms lease nobody renews
    _id = publish(client, "f", "partial")
    response = client.get("/s/f")  # waits for the lease to run out, then ends
    assert response.content == (
        f"id: {_id(1)}\ndata: partial\n\n".encode()
        + error_event("producer_lost", PRODUCER_LOST, _id(2))
    )
    # A reader who has every event still learns that the stream failed, once:
    # the error carries the end's id, and after that id there is nothing (204).
    again = client.get("/s/f", headers={"Last-Event-ID": _id(1)})
    assert (again.status_code, again.content) == (
        200,
        error_event("producer_lost", PRODUCER_LOST, _id(2)),
    )
    assert client.get("/s/f", headers={"Last-Event-ID": _id(2)}).status_code == 204


def test_a_stream_whose_producer_died_before_any_event_is_an_error_not_204(
    client: httpx.Client,
) -> None:
    client.post("/s/g/lease").raise_for_status()  # dies without producing anything
    _id = ids(client, "g")
    response = client.get("/s/g")  # waits for the lease to run out
    assert (response.status_code, response.content) == (
        200,
        error_event("producer_lost", PRODUCER_LOST, _id(1)),
    )
    assert client.get("/s/g").content == error_event("producer_lost", PRODUCER_LOST, _id(1))
    assert client.get("/s/g", headers={"Last-Event-ID": _id(1)}).status_code == 204


@pytest.mark.parametrize(
    ("outcome", "code", "message"),
    [
        ("error", "stream_error", "The stream ended with an error."),
        ("cancelled", "cancelled", "The stream was cancelled before it finished."),
        ("quota", "quota", "The stream ended without finishing (quota)."),
    ],
)
def test_every_outcome_but_done_is_told_as_an_error(
    client: httpx.Client, outcome: str, code: str, message: str
) -> None:
    _id = publish(client, f"o-{outcome}", "one", end=outcome)
    for headers in ({}, {"Last-Event-ID": _id(1)}):
        response = client.get(f"/s/o-{outcome}", headers=headers)
        assert response.status_code == 200
        assert response.content.endswith(error_event(code, message, _id(2)))
    assert client.get(f"/s/o-{outcome}", headers={"Last-Event-ID": _id(2)}).status_code == 204


def test_an_event_source_learns_of_the_failure_once_and_stops(client: httpx.Client) -> None:
    # The reconnecting client (like a browser's EventSource) after every event
    # of a failed stream: one error event, then it reconnects, gets 204, stops.
    _id = publish(client, "once", "one", end="failed")
    statuses: list[int] = []
    source = EventSource(
        client.base_url.join("/s/once"),
        policy=ReconnectPolicy(last_event_id=_id(1), retry_ms=0, jitter=0.0, max_retries=3),
        timeout=20,
        on_response=lambda response: statuses.append(response.status_code),
    )
    with source:
        received = list(source)
    assert [(e.event, e.id) for e in received] == [("error", _id(2))]
    assert statuses == [200, 204]


def test_follows_live_until_the_end(client: httpx.Client) -> None:
    decoder = Decoder()
    received: list[Event] = []
    with client.stream("GET", "/s/live", params={"missing_ok": "1"}) as response:
        assert response.status_code == 200  # headers at once, before any event
        _id = publish(client, "live", "hello")
        chunks = response.iter_bytes()
        while not received:
            received += decoder.feed(next(chunks))
        publish(client, "live", "world", end="done")
        for chunk in chunks:
            received += decoder.feed(chunk)
    assert received == [
        Event("hello", id=_id(1)),
        Event("world", id=_id(2)),
    ]


class InfoCounted(MemoryStore):
    """A memory store that counts the ``info()`` calls made of it."""

    def __init__(self) -> None:
        super().__init__()
        self.infos = 0

    async def info(self, stream: str) -> StreamInfo:
        self.infos += 1
        return await super().info(stream)


@pytest.mark.parametrize("via_hub", [False, True])
def test_a_new_streams_first_reader_is_answered_without_asking_the_store(via_hub: bool) -> None:
    # ``new``: the caller just made the stream; only a resume needs the store's summary.
    store = InfoCounted()
    hubs: list[Hub] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with Hub(store) as hub:
            hubs.append(hub)
            yield

    async def start(request: Request) -> Response:
        name = request.path_params["name"]
        await store.create(name)
        for data in ("a", "b"):
            await store.append(name, Event(data))
        await store.end(name)
        source = hubs[0] if via_hub else store
        return await stream_response(source, name, request, ping=None, new=True)

    app = Starlette(routes=[Route("/new/{name}", start, methods=["POST"])], lifespan=lifespan)
    with serve(app, lifespan="on") as server, httpx.Client(base_url=server.url) as http:
        fresh = http.post("/new/s1")
        assert store.infos == 0
        _id = Ids.of(Decoder().feed(fresh.content)[0].id)
        assert (fresh.status_code, Decoder().feed(fresh.content)) == (
            200,
            [Event("a", id=_id(1)), Event("b", id=_id(2))],
        )
        # With an id to resume from, what to answer is decided first, as without ``new``.
        resumed = http.post("/new/s2", headers={"Last-Event-ID": "0" * 8 + "-" + "9" * 12})
        assert store.infos == 1
        assert resumed.status_code == 400
        assert resumed.json()["error"]["code"] == "unknown_event_id"


def test_a_transform_is_called_as_it_is_or_by_its_own_bound_call() -> None:
    """``_Live`` calls a Python class's instance by its bound ``__call__`` (no call
    slot per event): the same method on the same instance; anything else as it is."""

    class Render:
        def __call__(self, item: object) -> object:
            return ("rendered", self, item)

    class Again(Render):
        pass

    class Static:
        __call__ = staticmethod(lambda item: ("static", item))

    for render in (Render(), Again()):
        bound = _callable(render)
        assert bound is not render
        assert bound("x") == render("x") == ("rendered", render, "x")
    static = Static()
    assert _callable(static) is static
    assert static("x") == ("static", "x")
    doubled = functools.partial(operator.mul, 2)
    for other in (default_transform, doubled, len):
        assert _callable(other) is other
