"""``last_event_id``: the header, else the query parameter; without a query
string the query is not parsed, and the answer is the general way's."""

from __future__ import annotations

import itertools

from starlette.requests import Request

from ssegate.streams import last_event_id

HEADERS = [None, "", "abc-1", "0d0a8bc0-000000000001.1"]
QUERIES = [b"", b"last_event_id=q-2", b"last_event_id=", b"x=1", b"last_event_id=a&last_event_id=b"]


def _request(header: str | None, query: bytes) -> Request:
    headers = [] if header is None else [(b"last-event-id", header.encode())]
    return Request({"type": "http", "headers": headers, "query_string": query})


def test_the_same_as_the_general_way() -> None:
    for header, query in itertools.product(HEADERS, QUERIES):
        general = _request(header, query)
        expected = general.headers.get("last-event-id") or general.query_params.get("last_event_id")
        assert last_event_id(_request(header, query)) == expected, (header, query)


def test_no_query_string_is_not_parsed() -> None:
    request = _request(None, b"")
    assert last_event_id(request) is None
    assert getattr(request, "_query_params", None) is None
    del request.scope["query_string"]  # a scope without one at all
    assert last_event_id(request) is None
