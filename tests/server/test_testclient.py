"""Starlette's TestClient (what users reach for first) works with finite streams."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from ssegate import Event
from ssegate.server import EventSourceResponse


async def endpoint(request: Request) -> EventSourceResponse:
    async def gen() -> AsyncIterator[Event]:
        for i in range(3):
            yield Event(f"n{i}", id=str(i))

    return EventSourceResponse(gen(), retry=100)


def test_testclient_reads_a_finite_stream() -> None:
    with TestClient(Starlette(routes=[Route("/", endpoint)])) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content == (
        b"retry: 100\nid: 0\ndata: n0\n\nid: 1\ndata: n1\n\nid: 2\ndata: n2\n\n"
    )
