"""One scenario table, run by the sync client and by the async one on asyncio and trio.

Each scenario is a script for a real server that misbehaves on purpose, and the
exact outcome: every event received (no loss, no duplicates), the
``Last-Event-ID`` the server saw on each request, the delays the client chose
(``sleep`` is injected: it records and returns at once; jitter is off), and the
error raised, if any.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from client_scripts import MODES, Outcome, Reply, Script, Step, Stream, json_reply, run

from ssegate import (
    Event,
    NotResumableError,
    ReconnectPolicy,
    ResponseError,
    RetriesExhausted,
    SSEGateError,
    TransportError,
)


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: list[Step]
    events: list[Event]
    last_event_ids: list[str | None]
    delays: list[float] = field(default_factory=list)
    error: type[SSEGateError] | None = None
    status: int | None = None  # the error's status, for ResponseError
    kwargs: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)  # ReconnectPolicy arguments
    methods: list[str] | None = None  # the request methods + paths seen, when it matters
    check: Callable[[Outcome, Script], None] | None = None


def _ev(data: str, id: str = "", event: str = "message", retry: int | None = None) -> Event:
    return Event(data, event=event, id=id, retry=retry)


NO_MORE = Reply(204)
POST = {"method": "POST", "json": {"prompt": "hi"}}


def _retry_after_date(out: Outcome, script: Script) -> None:
    assert out.delays == [20.0]


def _cause_is_500(out: Outcome, script: Script) -> None:
    assert isinstance(out.error, RetriesExhausted)
    assert out.error.attempts == 3
    assert isinstance(out.error.__cause__, ResponseError)
    assert out.error.__cause__.status == 500


def _cause_is(out: Outcome, cause: type[SSEGateError], *, attempts: int) -> None:
    assert isinstance(out.error, RetriesExhausted)
    assert out.error.attempts == attempts
    assert type(out.error.__cause__) is cause


def _body_sent_each_time(out: Outcome, script: Script) -> None:
    assert [s.body for s in script.seen] == [b'{"prompt":"hi"}'] * 3
    assert {s.headers["content-type"] for s in script.seen} == {"application/json"}


def _json_401(out: Outcome, script: Script) -> None:
    assert isinstance(out.error, ResponseError)
    assert out.error.body == b'{"error": {"message": "bad key", "code": "invalid_api_key"}}'
    assert out.error.headers["content-type"] == "application/json"
    assert json.loads(out.error.text)["error"]["code"] == "invalid_api_key"
    assert "answered 401 Unauthorized instead of an event stream" in str(out.error)
    assert out.source is not None
    assert out.source.status_code == 401


def _resume_names(out: Outcome, script: Script) -> None:
    assert out.source is not None
    assert out.source.stream_id == "st-1"
    assert str(out.source.events_url) == script.url + "/events"
    assert [s.body for s in script.seen] == [b'{"prompt":"hi"}', b"", b""]
    assert "content-type" not in script.seen[1].headers


def _wrong_type(out: Outcome, script: Script) -> None:
    assert "expected an event stream (text/event-stream)" in str(out.error)
    assert "'text/html; charset=utf-8'" in str(out.error)
    assert isinstance(out.error, ResponseError)
    assert out.error.body == b"<html>hello</html>"


SCENARIOS = [
    Scenario(
        "drop after k events, resume with Last-Event-ID",
        [
            Stream([b"id: 1\ndata: a\n\n", b"id: 2\ndata: b\n\n"], end="drop"),
            Stream([b"id: 3\ndata: c\n\n"]),
            NO_MORE,
        ],
        [_ev("a", "1"), _ev("b", "2"), _ev("c", "3")],
        [None, "2", "3"],
        delays=[3.0, 3.0],
    ),
    Scenario(
        "server retry: sets the delay",
        [Stream([b"retry: 1500\n\n", b"id: 7\ndata: x\n\n"], end="drop"), NO_MORE],
        [_ev("x", "7")],
        [None, "7"],
        delays=[1.5],
    ),
    Scenario(
        "retry on the event itself",
        [Stream([b"retry: 250\ndata: x\n\n"]), NO_MORE],
        [_ev("x", retry=250)],
        [None, None],
        delays=[0.25],
    ),
    Scenario("204 at once: no events, no error", [NO_MORE], [], [None]),
    Scenario(
        "401 with JSON reads as a 401, not retried",
        [json_reply(401, {"error": {"message": "bad key", "code": "invalid_api_key"}})],
        [],
        [None],
        error=ResponseError,
        status=401,
        check=_json_401,
    ),
    Scenario(
        "404 is not retried",
        [Reply(404, b"not here")],
        [],
        [None],
        error=ResponseError,
        status=404,
    ),
    Scenario(
        "503 with Retry-After waits what the server asked",
        [Reply(503, b"busy", {"retry-after": "7"}), Stream([b"data: ok\n\n"]), NO_MORE],
        [_ev("ok")],
        [None, None, None],
        delays=[7.0, 3.0],
    ),
    Scenario(
        "429 with an HTTP-date Retry-After",
        [Reply(429, b"", {"retry-after": "Sun, 09 Sep 2001 01:47:00 GMT"}), NO_MORE],
        [],
        [None, None],
        kwargs={"clock": lambda: 1_000_000_000.0},  # 2001-09-09 01:46:40 UTC
        check=_retry_after_date,
    ),
    Scenario(
        "wrong content type is an error with the body",
        [Reply(200, b"<html>hello</html>", {"content-type": "text/html; charset=utf-8"})],
        [],
        [None],
        error=ResponseError,
        status=200,
        check=_wrong_type,
    ),
    Scenario(
        "5xx backs off exponentially, then resets after success",
        [Reply(500), Reply(502), Reply(500), Stream([b"data: ok\n\n"]), NO_MORE],
        [_ev("ok")],
        [None] * 5,
        delays=[3.0, 6.0, 12.0, 3.0],
    ),
    Scenario(
        "back-off is capped",
        [Reply(500)] * 4 + [NO_MORE],
        [],
        [None] * 5,
        delays=[3.0, 6.0, 10.0, 10.0],
        policy={"max_delay": 10.0},
    ),
    Scenario(
        "max_retries gives up with the last error as the cause",
        [Reply(500)],
        [],
        [None] * 3,
        delays=[3.0, 6.0],
        error=RetriesExhausted,
        policy={"max_retries": 2},
        check=_cause_is_500,
    ),
    Scenario(
        "a stream that opens only to send an error event is a failed attempt",
        [Stream([b'retry: 0\nevent: error\ndata: {"code":"overloaded"}\n\n'])],
        [_ev('{"code":"overloaded"}', event="error", retry=0)] * 3,
        [None] * 3,
        delays=[0.0, 0.0],
        error=RetriesExhausted,
        policy={"max_retries": 2},
    ),
    Scenario(
        "a stream that opens and drops before any event is a failed attempt",
        [Stream([b": hello\n\n"], end="drop")],
        [],
        [None] * 3,
        delays=[3.0, 6.0],
        error=RetriesExhausted,
        policy={"max_retries": 2},
        check=lambda out, script: _cause_is(out, TransportError, attempts=3),
    ),
    Scenario(
        "events before an error event are progress: the count starts again",
        [
            Stream([b"retry: 0\nevent: error\ndata: x\n\n"]),
            Stream([b"id: 1\ndata: a\n\n", b"event: error\ndata: y\n\n"]),
            Stream([b"event: error\ndata: z\n\n"]),
            NO_MORE,
        ],
        [
            _ev("x", event="error", retry=0),
            _ev("a", "1"),
            _ev("y", "1", event="error"),
            _ev("z", "1", event="error"),
        ],
        [None, None, "1", "1"],
        delays=[0.0, 0.0, 0.0],
        policy={"max_retries": 2},
    ),
    Scenario(
        "stall without bytes: the read timeout reconnects",
        [Stream([b"id: 1\ndata: a\n\n"], end="stall"), NO_MORE],
        [_ev("a", "1")],
        [None, "1"],
        delays=[3.0],
        kwargs={"read_timeout": 2.0},
    ),
    Scenario(
        "BOM, CRLF and lone CR, split anywhere, split UTF-8",
        [
            Stream(
                [
                    b"\xef\xbb",
                    b"\xbfid: 1\r\ndata: a\r",
                    b"\ndata: b\r\n\r\n",
                    b"data: \xc3",
                    b"\xa9\r\r",
                ]
            ),
            NO_MORE,
        ],
        [_ev("a\nb", "1"), _ev("\u00e9", "1")],
        [None, "1"],
        delays=[3.0],
    ),
    Scenario(
        "keep-alive comments are not events",
        [Stream([b": ping\n\n", b"data: a\n\n", b": ping\n\n"]), NO_MORE],
        [_ev("a")],
        [None, None],
        delays=[3.0],
    ),
    Scenario(
        "an id-only block still moves Last-Event-ID",
        [Stream([b"data: a\n\n", b"id: 9\n\n"], end="drop"), NO_MORE],
        [_ev("a")],
        [None, "9"],
        delays=[3.0],
    ),
    Scenario(
        "last_event_id given: sent on the first request",
        [Stream([b"data: a\n\n"]), NO_MORE],
        [_ev("a", "41")],
        ["41", "41"],
        delays=[3.0],
        policy={"last_event_id": "41"},
    ),
    Scenario(
        "reconnect=False: a drop raises",
        [Stream([b"data: a\n\n"], end="drop")],
        [_ev("a")],
        [None],
        error=TransportError,
        kwargs={"reconnect": False},
    ),
    Scenario(
        "reconnect=False: a clean end just ends",
        [Stream([b"data: a\n\n"])],
        [_ev("a")],
        [None],
        kwargs={"reconnect": False},
    ),
    Scenario(
        "until_done stops at [DONE] without yielding it or reconnecting",
        [Stream([b"data: a\n\n", b"data: [DONE]\n\n", b"data: late\n\n"], end="stall")],
        [_ev("a")],
        [None],
        kwargs={"until_done": True},
    ),
    Scenario(
        "until_done yields a done event, then stops",
        [Stream([b"event: token\ndata: a\n\n", b"event: done\ndata: {}\n\n"], end="stall")],
        [_ev("a", event="token"), _ev("{}", event="done")],
        [None],
        kwargs={"until_done": True},
    ),
    Scenario(
        "POST dropped, no resume named: NotResumableError, never re-sent",
        [Stream([b"id: 1\ndata: a\n\n"], end="drop")],
        [_ev("a", "1")],
        [None],
        error=NotResumableError,
        kwargs=POST,
        methods=["POST /s/"],
    ),
    Scenario(
        "POST that ends cleanly is complete",
        [Stream([b"data: a\n\n"])],
        [_ev("a")],
        [None],
        kwargs=POST,
    ),
    Scenario(
        "POST resumes with GET on the events URL the server named",
        [
            Stream(
                [b"id: 1\ndata: a\n\n", b"id: 2\ndata: b\n\n"],
                end="drop",
                headers={"X-Stream-Id": "st-1", "Link": '<{path}/events>; rel="events"'},
            ),
            Stream([b"id: 3\ndata: c\n\n"]),
            NO_MORE,
        ],
        [_ev("a", "1"), _ev("b", "2"), _ev("c", "3")],
        [None, "2", "3"],
        delays=[3.0, 3.0],
        kwargs=POST,
        methods=["POST /s/", "GET /s/events", "GET /s/events"],
        check=_resume_names,
    ),
    Scenario(
        "POST with resend=True is sent again, with Last-Event-ID",
        [Stream([b"id: 1\ndata: a\n\n"], end="drop"), Stream([b"id: 2\ndata: b\n\n"]), NO_MORE],
        [_ev("a", "1"), _ev("b", "2")],
        [None, "1", "2"],
        delays=[3.0, 3.0],
        kwargs={**POST, "resend": True},
        methods=["POST /s/"] * 3,
        check=_body_sent_each_time,
    ),
    Scenario(
        "POST answered 429 was not processed: sent again after Retry-After",
        [Reply(429, b"slow down", {"retry-after": "1"}), Stream([b"data: a\n\n"])],
        [_ev("a")],
        [None, None],
        delays=[1.0],
        kwargs=POST,
    ),
    Scenario(
        "POST answered 500 may have been processed: not sent again",
        [Reply(500, b"oops"), NO_MORE],
        [],
        [None],
        error=ResponseError,
        status=500,
        kwargs=POST,
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(mode: str, scenario: Scenario, script: Callable[[list[Step]], Script]) -> None:
    sc = script(scenario.steps)
    policy = ReconnectPolicy(**{"jitter": 0.0, "max_retries": 5, **scenario.policy})
    out = run(mode, sc.url, policy=policy, **scenario.kwargs)

    assert out.events == scenario.events
    assert sc.last_event_ids == scenario.last_event_ids
    if scenario.check is None or scenario.delays:
        assert out.delays == scenario.delays
    if scenario.error is None:
        assert out.error is None
    else:
        assert type(out.error) is scenario.error, out.error
    if scenario.status is not None:
        assert isinstance(out.error, ResponseError)
        assert out.error.status == scenario.status
    if scenario.methods is not None:
        token = sc.path.rsplit("/", 1)[1]
        seen = [f"{s.method} {s.path.replace(token + '/', '').replace(token, '')}" for s in sc.seen]
        assert seen == scenario.methods
    if scenario.check is not None:
        scenario.check(out, sc)
