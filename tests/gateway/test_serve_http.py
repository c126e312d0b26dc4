"""``cli._http``: ``serve``'s uvicorn protocol, httptools' with its loggers and
socket looked up less: made only for the uvicorn code it repeats; every
connection set up as uvicorn's own sets it up (the same attributes, addresses,
answers and access lines)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ssegate.cli import _http
from ssegate.testing import serve


@pytest.fixture
def fresh() -> Iterator[None]:
    """``http_protocol()`` made again in the test (and as it was after)."""
    saved = list(_http._MADE)
    _http._MADE.clear()
    try:
        yield
    finally:
        _http._MADE[:] = saved


def test_it_is_made_for_the_uvicorn_it_repeats(fresh: None) -> None:
    lean = _http.http_protocol()
    assert lean is not None
    assert issubclass(lean, HttpToolsProtocol)
    assert _http.http_protocol() is lean


def test_no_lean_protocol_for_other_code(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_http._FINGERPRINTS, "connection_made", "another uvicorn")
    assert _http.http_protocol() is None


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps(
        {"server": scope["server"], "client": scope["client"][0], "scheme": scope["scheme"]}
    ).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def test_a_connection_is_served_as_uvicorns_own_serves_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lean = _http.http_protocol()
    answers = []
    for http in (lean, "httptools"):
        with serve(_app, http=http, log_level="info", access_log=True) as server:
            response = httpx.get(server.url + "/x?y=1", headers={"connection": "close"})
            port = server.url.rpartition(":")[2]
        answer = response.json()
        assert answer["server"] == ["127.0.0.1", int(port)]
        answer["server"] = None
        kept = {k: v for k, v in response.headers.items() if k != "date"}
        answers.append((response.status_code, kept, answer))
    assert answers[0] == answers[1]
    assert answers[0][2] == {"server": None, "client": "127.0.0.1", "scheme": "http"}
    lines = [line for line in capsys.readouterr().out.splitlines() if "GET /x?y=1" in line]
    assert len(lines) == 2  # the access line, both ways


def test_its_attributes_are_uvicorns(fresh: None) -> None:
    lean = _http.http_protocol()
    assert lean is not None
    config = uvicorn.Config(_app)
    config.load()
    state = ServerState()

    async def made() -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        protocols = [kind(config, state, {}, _loop=loop) for kind in (lean, HttpToolsProtocol)]
        return [
            {k: (type(v) if k == "parser" else v) for k, v in vars(p).items()} for p in protocols
        ]

    ours, theirs = asyncio.run(made())
    assert list(ours) == list(theirs)
    for name in ours:
        assert ours[name] == theirs[name], name


def test_a_fingerprint_is_the_same_in_every_process() -> None:
    import subprocess
    import sys

    code = (
        "from starlette.datastructures import Headers;"
        "from ssegate.gateway._guard import fingerprint;"
        "print(fingerprint(Headers.getlist))"  # a comprehension's code inside
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(runs) == 1
