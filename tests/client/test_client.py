"""The client beyond the scenario table: close(), own httpx clients, hooks, errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

import anyio
import httpx
import pytest
from client_scripts import Reply, Script, Step, Stream

from ssegate import (
    Event,
    ReadTimeout,
    ReconnectPolicy,
    ResponseError,
    RetriesExhausted,
    SSEGateError,
    TransportError,
)
from ssegate.client import AsyncEventSource, EventSource
from ssegate.client._base import MAX_ERROR_BODY

MakeScript = Callable[[list[Step]], Script]

ASYNC_BACKENDS = [
    "asyncio",
    pytest.param(
        "trio",
        marks=pytest.mark.filterwarnings(
            # see TRIO_HTTPX_GENERATORS in test_scenarios.py (encode/httpx#3686)
            "ignore:Exception ignored in. <async_generator object"
            ":pytest.PytestUnraisableExceptionWarning"
        ),
    ),
]

#: Generous bound for "promptly": far below the test timeout, far above any real
#: scheduling delay on a busy machine. The read timeout is off, so without
#: close() these tests would hang until this bound fails them.
PROMPT = 20.0


def _no_sleep(delay: float) -> None:
    pass


async def _ano_sleep(delay: float) -> None:
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- close() ---------------------------------------------------------------


def test_close_from_another_thread_ends_a_blocked_read(script: MakeScript) -> None:
    sc = script([Stream([b"data: a\n\n"], end="stall")])
    got: list[Event] = []
    errors: list[BaseException] = []
    es = EventSource(sc.url, read_timeout=None)

    def consume() -> None:
        try:
            for event in es:
                got.append(event)
                if len(got) == 1:
                    started.set()
        except BaseException as exc:
            errors.append(exc)

    started = threading.Event()
    thread = threading.Thread(target=consume)
    thread.start()
    assert started.wait(PROMPT)
    es.close()
    thread.join(PROMPT)
    assert not thread.is_alive()
    assert got == [Event("a", id="")]
    assert errors == []
    assert len(sc.seen) == 1
    assert list(es) == []  # closed stays closed


def test_closed_before_iterating_sends_nothing(script: MakeScript) -> None:
    sc = script([Stream([b"data: a\n\n"])])
    es = EventSource(sc.url)
    es.close()
    assert list(es) == []
    assert sc.seen == []


@pytest.mark.parametrize("backend", ASYNC_BACKENDS)
def test_async_closed_before_iterating_sends_nothing(backend: str, script: MakeScript) -> None:
    sc = script([Stream([b"data: a\n\n"])])

    async def main() -> list[Event]:
        es = AsyncEventSource(sc.url)
        es.close()
        return [e async for e in es]

    assert anyio.run(main, backend=backend) == []
    assert sc.seen == []


def test_close_from_another_thread_ends_the_wait_between_attempts(script: MakeScript) -> None:
    # Retry-After: 3600 is capped at max_delay (30 s): the default sleep waits
    # that long unless close() cuts it short.
    sc = script([Reply(503, b"", {"retry-after": "3600"})])
    es = EventSource(sc.url, read_timeout=None, on_reconnect=lambda d, e: waiting.set())
    waiting = threading.Event()
    thread = threading.Thread(target=lambda: list(es))
    thread.start()
    assert waiting.wait(PROMPT)
    es.close()
    thread.join(PROMPT)
    assert not thread.is_alive()
    assert len(sc.seen) == 1


@pytest.mark.parametrize("backend", ASYNC_BACKENDS)
def test_close_from_another_task_ends_a_pending_read(backend: str, script: MakeScript) -> None:
    sc = script([Stream([b"data: a\n\n"], end="stall")])
    got: list[Event] = []

    async def main() -> None:
        async with AsyncEventSource(sc.url, read_timeout=None) as es:
            with anyio.fail_after(PROMPT):
                async with anyio.create_task_group() as tg:

                    async def consume() -> None:
                        async for event in es:
                            got.append(event)
                            first.set()

                    first = anyio.Event()
                    tg.start_soon(consume)
                    await first.wait()
                    es.close()

    anyio.run(main, backend=backend)
    assert got == [Event("a", id="")]
    assert len(sc.seen) == 1


@pytest.mark.parametrize("backend", ASYNC_BACKENDS)
def test_close_from_another_task_ends_the_wait(backend: str, script: MakeScript) -> None:
    sc = script([Reply(503, b"", {"retry-after": "3600"})])

    async def main() -> None:
        waiting = anyio.Event()
        es = AsyncEventSource(sc.url, read_timeout=None, on_reconnect=lambda d, e: waiting.set())
        with anyio.fail_after(PROMPT):
            async with anyio.create_task_group() as tg:

                async def consume() -> None:
                    async for _ in es:
                        pass

                tg.start_soon(consume)
                await waiting.wait()
                await es.aclose()
        assert es.closed

    anyio.run(main, backend=backend)
    assert len(sc.seen) == 1


# -- the caller's own httpx client ---------------------------------------------


def test_own_client_sends_its_headers_and_stays_open(script: MakeScript) -> None:
    sc = script([Stream([b"data: a\n\n"]), Reply(204)])
    with httpx.Client(headers={"Authorization": "Bearer k1"}) as client:
        es = EventSource(sc.url, client=client, headers={"X-Trace": "t"}, sleep=_no_sleep)
        with es:
            assert list(es) == [Event("a", id="")]
        assert not client.is_closed
        assert client.get(sc.url).status_code == 204  # the client still works
    # every reconnect carries them too (no silently anonymous reconnects)
    assert [s.headers["authorization"] for s in sc.seen[:2]] == ["Bearer k1", "Bearer k1"]
    assert [s.headers["x-trace"] for s in sc.seen[:2]] == ["t", "t"]
    assert sc.seen[0].headers["accept"] == "text/event-stream"
    assert sc.seen[0].headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("backend", ASYNC_BACKENDS)
def test_own_async_client(backend: str, script: MakeScript) -> None:
    sc = script([Stream([b"data: a\n\n"]), Reply(204)])

    async def main() -> list[Event]:
        async with httpx.AsyncClient(headers={"Authorization": "Bearer k2"}) as client:
            async with AsyncEventSource(sc.url, client=client, sleep=_ano_sleep) as es:
                events = [e async for e in es]
            assert not client.is_closed
            return events

    assert anyio.run(main, backend=backend) == [Event("a", id="")]
    assert sc.seen[0].headers["authorization"] == "Bearer k2"


def test_wrong_client_type_is_refused() -> None:
    with (
        httpx.Client() as sync_client,
        pytest.raises(TypeError, match=r"use EventSource with an httpx\.Client"),
    ):
        AsyncEventSource("http://127.0.0.1:1/", client=sync_client)  # type: ignore[arg-type]


# -- transport errors ----------------------------------------------------------


def test_connection_refused_without_reconnect_is_a_transport_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}/"
    with EventSource(url, reconnect=False) as es, pytest.raises(TransportError) as info:
        list(es)
    assert f"could not connect to GET {url}" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_a_post_that_never_left_is_retried() -> None:
    # Nothing reached the server, so sending the POST again repeats nothing.
    url = f"http://127.0.0.1:{_free_port()}/"
    delays: list[float] = []
    policy = ReconnectPolicy(jitter=0.0, max_retries=2)
    es = EventSource(url, method="POST", json={}, policy=policy, sleep=delays.append)
    with es, pytest.raises(RetriesExhausted) as info:
        list(es)
    assert delays == [3.0, 6.0]
    assert info.value.attempts == 3
    assert isinstance(info.value.__cause__, TransportError)


@pytest.mark.parametrize("backend", ASYNC_BACKENDS)
def test_async_read_timeout_without_reconnect(backend: str, script: MakeScript) -> None:
    sc = script([Stream([b"data: a\n\n"], end="stall")])

    async def main() -> None:
        async with AsyncEventSource(sc.url, read_timeout=0.5, reconnect=False) as es:
            with pytest.raises(ReadTimeout, match="not even a keep-alive comment"):
                async for _ in es:
                    pass

    anyio.run(main, backend=backend)


def test_error_body_is_truncated(script: MakeScript) -> None:
    sc = script([Reply(400, b"x" * (MAX_ERROR_BODY * 3))])
    with EventSource(sc.url) as es, pytest.raises(ResponseError) as info:
        list(es)
    assert info.value.status == 400
    assert info.value.body == b"x" * MAX_ERROR_BODY


def test_an_error_ends_the_iteration(script: MakeScript) -> None:
    sc = script([Reply(404)])
    es = EventSource(sc.url)
    with pytest.raises(ResponseError):
        next(es)
    assert list(es) == []  # no second request
    assert len(sc.seen) == 1
    es.close()


def test_redirects_are_followed(script: MakeScript) -> None:
    target = script([Stream([b"data: there\n\n"]), Reply(204)])
    sc = script([Reply(307, b"", {"location": target.path})])
    with EventSource(sc.url, sleep=_no_sleep) as es:
        assert list(es) == [Event("there", id="")]


# -- state and hooks ---------------------------------------------------------


def test_state_and_hooks(script: MakeScript) -> None:
    sc = script(
        [
            Stream([b"retry: 1200\nid: 5\ndata: a\n\n", b": ping\n\n"], end="drop"),
            Reply(204, b"", {"x-why": "done"}),
        ]
    )
    responses: list[int] = []
    chunks: list[bytes] = []
    reconnects: list[tuple[float, str]] = []
    es = EventSource(
        sc.url,
        policy=ReconnectPolicy(jitter=0.0),
        sleep=lambda d: None,
        on_response=lambda r: responses.append(r.status_code),
        on_bytes=chunks.append,
        on_reconnect=lambda d, e: reconnects.append((d, type(e).__name__)),
    )
    before = (es.status_code, es.response_headers, es.last_event_id, es.retry)
    assert before == (None, None, "", 3000)
    with es:
        assert list(es) == [Event("a", id="5", retry=1200)]
    assert responses == [200, 204]
    assert b"".join(chunks) == b"retry: 1200\nid: 5\ndata: a\n\n: ping\n\n"
    assert reconnects == [(1.2, "TransportError")]
    assert es.status_code == 204
    assert es.response_headers is not None
    assert es.response_headers["x-why"] == "done"
    assert (es.last_event_id, es.retry) == ("5", 1200)
    assert es.stream_id is None
    assert es.events_url is None


def test_json_body_and_params(script: MakeScript) -> None:
    sc = script([Stream([b'data: {"n": 1}\n\n'])])
    es = EventSource(sc.url, method="post", json={"q": "é"}, params={"a": "1"}, reconnect=False)
    with es:
        events = list(es)
    assert [e.json() for e in events] == [{"n": 1}]
    assert sc.seen[0].method == "POST"
    assert json.loads(sc.seen[0].body) == {"q": "é"}
    assert es.url.params["a"] == "1"


# -- misuse ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "ftp://example.com/"}, "needs an http:// or https:// URL"),
        ({"json": {}, "content": b"x", "method": "POST"}, "pass json= or content=, not both"),
        ({"content": b"x"}, "a GET request cannot carry a body"),
        ({"method": "GET /x"}, "must be an HTTP method name"),
        ({"read_timeout": 0}, "read_timeout must be positive"),
        ({"policy": ReconnectPolicy(), "max_retries": 3}, "set last_event_id and max_retries on"),
        ({"last_event_id": "a\nb"}, "must not contain NUL, CR or LF"),
        ({"headers": {"last-event-id": "3"}}, "pass last_event_id= instead"),
        ({"headers": {"X": "a\r\nInjected: 1"}}, "ASCII text without CR, LF or NUL"),
        ({"headers": {"X": "café"}}, "ASCII text without CR, LF or NUL"),
        ({"headers": {"X Y": "1"}}, "'X Y' is not a valid header name"),
        ({"headers": {"": "1"}}, "'' is not a valid header name"),
        ({"headers": {"X": 1}}, "the value of header X must be a str, not int"),
    ],
)
def test_misuse_is_refused(kwargs: dict[str, object], message: str) -> None:
    kwargs.setdefault("url", "http://127.0.0.1:1/")
    with pytest.raises(ValueError, match=message):
        EventSource(**kwargs)  # type: ignore[arg-type]


def test_errors_are_ours() -> None:
    for cls in (ResponseError, TransportError, ReadTimeout, RetriesExhausted):
        assert issubclass(cls, SSEGateError)


def test_client_imports_no_server_code() -> None:
    code = "import sys, ssegate.client; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    forbidden = ("starlette", "uvicorn", "redis", "fastapi", "ssegate.server", "ssegate.streams")
    forbidden += ("ssegate.gateway", "ssegate.llm", "ssegate.cli", "ssegate.testing")
    below = tuple(f + "." for f in forbidden)
    assert [m for m in out.stdout.split() if m in forbidden or m.startswith(below)] == []
