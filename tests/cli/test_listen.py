"""``ssegate listen`` against a real server on 127.0.0.1: through typer's CliRunner, and as
the real command in a subprocess where the exit code and the exact output are the point."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from cli_support import MALFORMED_URLS, head_1, ssegate, url_message
from typer.testing import CliRunner

from ssegate.cli import app
from ssegate.testing import serve

STREAM = [
    b": ping\n\n",
    b'id: 1\nevent: token\ndata: {"text": "hi", "n": [1, 2]}\n\n',
    b"id: 2\ndata: plain\ndata: two lines\n\n",
]


EVENT_STREAM = [(b"content-type", b"text/event-stream")]

# ssegate's own error events (server/_options.py, llm/formats/native.py)
FINAL_ERROR_DATA = (
    '{"code":"internal_error","message":"The event stream failed.","retryable":false}'
)
FINAL_ERROR = b"event: error\ndata: " + FINAL_ERROR_DATA.encode() + b"\n\n"
RETRYABLE_DATA = '{"code":"overloaded","message":"Busy.","retryable":true}'
RETRYABLE_ERROR = b"event: error\ndata: " + RETRYABLE_DATA.encode() + b"\n\n"


class App:
    """A raw ASGI app with one behaviour per path; counts requests per path."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        stall: dict[str, Any] = {"end": "stall", "rcv": receive}
        n = self.seen[path] = self.seen.get(path, 0) + 1
        if path == "/events":
            if n == 1:
                # retry: 0 so the reconnect after the clean end does not wait
                await self._stream(send, [b"retry: 0\n\n", *STREAM])
            else:
                await self._plain(send, 204, b"")
        elif path == "/json401":
            await self._plain(send, 401, b'{"error": "bad key"}', b"application/json")
        elif path == "/echo":
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            echo = {"method": scope["method"], "body": body.decode(), "headers": headers}
            await self._stream(send, [b"data: " + json.dumps(echo).encode() + b"\n\n"])
        elif path == "/done":
            await self._stream(send, [b"data: a\n\n", b"data: [DONE]\n\n"], **stall)
        elif path == "/many":
            await self._stream(send, [b"data: %d\n\n" % i for i in range(5)], **stall)
        elif path == "/endless":
            await self._endless(send, receive)
        elif path == "/drop":
            await self._stream(send, [b"data: a\n\n"], end="drop")
        elif path == "/error-final":
            await self._stream(send, [b"retry: 0\n\n", FINAL_ERROR])
        elif path == "/error-retryable":
            await self._stream(send, [b"retry: 0\n\n", RETRYABLE_ERROR])
        elif path == "/crlf":
            await self._stream(send, [b"\xef\xbb\xbf: hi\r", b"\ndata: x\r\n\r\n"])
        else:
            await self._plain(send, 404, b"")

    @staticmethod
    async def _endless(send: Any, receive: Any) -> None:
        """Events every 10 ms (paced, and bounded to 100 s) until the client goes away."""
        await send({"type": "http.response.start", "status": 200, "headers": EVENT_STREAM})
        async with anyio.create_task_group() as tg:

            async def until_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(until_disconnect)
            for i in range(10_000):
                body = b"data: %d\n\n" % i
                await send({"type": "http.response.body", "body": body, "more_body": True})
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()

    @staticmethod
    async def _plain(send: Any, status: int, body: bytes, kind: bytes = b"text/plain") -> None:
        headers = [(b"content-type", kind)] if body else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _stream(send: Any, chunks: list[bytes], end: str = "clean", rcv: Any = None) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if end == "clean":
            await send({"type": "http.response.body", "body": b""})
        elif end == "stall":
            while (await rcv())["type"] != "http.disconnect":
                pass
        # "drop": return with the body unfinished; uvicorn closes the connection


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[App, str]]:
    asgi = App()
    with serve(asgi) as running:
        yield asgi, running.url


@pytest.fixture
def url(server: tuple[App, str]) -> str:
    return server[1]


def listen(*args: str) -> Any:
    return CliRunner().invoke(app, ["listen", *args, "--no-timestamps"])


def test_events_statuses_and_reconnect(server: tuple[App, str]) -> None:
    asgi, url = server
    result = listen(url + "/events")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "token id=1\n"
        "{\n"
        '  "text": "hi",\n'
        '  "n": [\n'
        "    1,\n"
        "    2\n"
        "  ]\n"
        "}\n"
        "message id=2\n"
        "plain\n"
        "two lines\n"
    )
    assert result.stderr == (
        "* 200 OK (text/event-stream)\n"
        "* keep-alive: ping\n"
        "* reconnecting in 0.0 s: the stream ended\n"
        "* 204 No Content (no content type)\n"
        "* the server ended the stream (204)\n"
    )
    assert asgi.seen["/events"] == 2


def test_raw_writes_the_exact_bytes(url: str) -> None:
    result = listen(url + "/crlf", "--raw", "--no-reconnect")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"\xef\xbb\xbf: hi\r\ndata: x\r\n\r\n"


def test_crlf_keep_alive_and_bom(url: str) -> None:
    result = listen(url + "/crlf", "--no-reconnect")
    assert result.exit_code == 0, result.output
    assert result.stdout == "message\nx\n"
    assert result.stderr == "* 200 OK (text/event-stream)\n* keep-alive: hi\n"


def test_compact(url: str) -> None:
    result = listen(url + "/echo", "--compact", "-X", "POST")
    assert result.exit_code == 0, result.output
    line = result.stdout
    assert line.startswith('message {"method": "POST", "body": "", "headers": {')
    assert line.count("\n") == 1


def test_count_stops_after_n_events(url: str) -> None:
    result = listen(url + "/many", "--count", "2", "--compact")
    assert result.exit_code == 0, result.output
    assert result.stdout == "message 0\nmessage 1\n"


def test_until_done(url: str) -> None:
    result = listen(url + "/done", "--until-done")
    assert result.exit_code == 0, result.output
    assert result.stdout == "message\na\n"


def test_post_json_and_headers(url: str) -> None:
    result = listen(
        url + "/echo", "--json", '{"q": "é"}', "-H", "Authorization: Bearer k", "--compact"
    )
    assert result.exit_code == 0, result.output
    echo = json.loads(result.stdout.removeprefix("message "))
    assert echo["method"] == "POST"
    assert echo["body"] == '{"q": "é"}'
    assert echo["headers"]["content-type"] == "application/json"
    assert echo["headers"]["authorization"] == "Bearer k"
    assert echo["headers"]["accept"] == "text/event-stream"


def test_data_from_a_file(url: str, tmp_path: Any) -> None:
    body = tmp_path / "body.txt"
    body.write_bytes(b"from a file")
    result = listen(url + "/echo", "-d", f"@{body}", "-X", "PUT", "--compact")
    assert result.exit_code == 0, result.output
    echo = json.loads(result.stdout.removeprefix("message "))
    assert (echo["method"], echo["body"]) == ("PUT", "from a file")


def test_error_status_exits_3_with_the_body(url: str) -> None:
    result = listen(url + "/json401")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.endswith(
        "* error: GET " + url + "/json401 answered 401 Unauthorized instead of an event stream: "
        '{"error": "bad key"}\n'
    )


def test_connection_refused_exits_4(url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = listen(f"http://127.0.0.1:{port}/", "--no-reconnect")
    assert result.exit_code == 4
    assert "* error: could not connect to GET" in result.stderr


def test_dropped_post_exits_5_and_names_the_option(url: str) -> None:
    done = ssegate("listen", url + "/drop", "-d", "x", "--no-timestamps")
    assert (done.code, done.stdout) == (5, "message\na\n")
    assert done.stderr == (
        "* 200 OK (text/event-stream)\n"
        f"* error: the POST stream from {url}/drop broke after 1 events and the server named "
        'no stream to resume (no Link: <url>; rel="events" header); reconnecting would send '
        "the request again (for an LLM, a second paid generation): pass --resend to allow that\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-H", "no colon"], "expected 'Name: value'"),
        (["--json", "{oops"], "not valid JSON"),
        (["--json", "{}", "-d", "x"], "give -d/--data or --json, not both"),
        (["-X", "GET", "-d", "x"], "a GET request cannot carry a body"),
    ],
)
def test_bad_arguments_exit_2(url: str, args: list[str], message: str) -> None:
    result = listen(url + "/events", *args)
    assert result.exit_code == 2
    assert message in re.sub(r"[\s│]+", " ", result.stderr)


def test_timestamps(url: str) -> None:
    result = CliRunner().invoke(app, ["listen", url + "/crlf", "--no-reconnect"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} message\nx\n", result.stdout)


def test_api_key_from_the_environment(url: str) -> None:
    runner = CliRunner()
    args = ["listen", url + "/echo", "-X", "POST", "--compact", "--no-timestamps"]
    result = runner.invoke(app, args, env={"SSEGATE_API_KEY": "sk-1"})
    assert result.exit_code == 0, result.output
    echo = json.loads(result.stdout.removeprefix("message "))
    assert echo["headers"]["authorization"] == "Bearer sk-1"


def test_a_closed_pipe_ends_quietly(url: str) -> None:
    # `ssegate listen URL | head -1`: a real pipe whose reader goes away.
    line, done = head_1("listen", url + "/endless", "--compact", "--no-timestamps")
    assert line == b"message 0\n"
    assert (done.code, done.stderr) == (0, "* 200 OK (text/event-stream)\n")


# -- errors that no retry can fix end it at once -------------------------------


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_a_malformed_url_is_one_line_and_exit_2(url: str) -> None:
    done = ssegate("listen", url)
    assert (done.code, done.stdout, done.stderr) == (2, "", f"error: {url_message(url)}\n")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("X: a\rb", "the value of header X must be ASCII text without CR, LF or NUL: 'a\\rb'"),
        ("X: café", "the value of header X must be ASCII text without CR, LF or NUL: 'café'"),
        ("X Y: 1", "'X Y' is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"),
        ("no colon", "-H 'no colon': expected 'Name: value'"),
    ],
)
def test_a_bad_header_is_one_line_and_exit_2(url: str, header: str, message: str) -> None:
    done = ssegate("listen", url + "/events", "-H", header)
    assert (done.code, done.stdout, done.stderr) == (2, "", f"error: {message}\n")


def test_an_unknown_host_exits_4_at_once() -> None:
    # .invalid never resolves (RFC 6761); a typo stays a typo, however long one waits.
    done = ssegate("listen", "http://nosuchhost.invalid/events", "--no-timestamps")
    assert (done.code, done.stdout) == (4, "")
    assert done.stderr == (
        "* error: could not connect to GET http://nosuchhost.invalid/events: [Errno -2] Name or "
        "service not known (the host name does not resolve: not retrying)\n"
    )


def test_a_refused_connection_is_still_retried() -> None:
    # A server that is starting up refuses: that is worth another try.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    where = f"GET http://127.0.0.1:{port}/"
    done = ssegate("listen", f"http://127.0.0.1:{port}/", "--max-retries", "1", "--no-timestamps")
    assert (done.code, done.stdout) == (4, "")
    refused = f"could not connect to {where}: [Errno 111] Connection refused"
    assert re.fullmatch(
        re.escape("* reconnecting in ")
        + r"\d\.\d"
        + re.escape(f" s: {refused}\n")
        + re.escape(
            f"* error: gave up on http://127.0.0.1:{port}/ after 2 failed attempts: {refused}\n"
        ),
        done.stderr,
    ), done.stderr


def test_an_error_event_marked_not_retryable_exits_6_at_once(
    server: tuple[App, str],
) -> None:
    asgi, url = server
    before = asgi.seen.get("/error-final", 0)
    done = ssegate("listen", url + "/error-final", "--compact", "--no-timestamps")
    assert asgi.seen["/error-final"] - before == 1  # no reconnect
    assert (done.code, done.stdout) == (
        6,
        'error {"code": "internal_error", "message": "The event stream failed.", '
        '"retryable": false}\n',
    )
    assert done.stderr == (
        "* 200 OK (text/event-stream)\n"
        '* error: the server sent an error event marked "retryable": false; not reconnecting\n'
    )


def test_until_done_ends_at_any_error_event_with_6(url: str) -> None:
    done = ssegate(
        "listen", url + "/error-retryable", "--until-done", "--compact", "--no-timestamps"
    )
    assert (done.code, done.stdout) == (
        6,
        'error {"code": "overloaded", "message": "Busy.", "retryable": true}\n',
    )
    assert done.stderr == (
        "* 200 OK (text/event-stream)\n* error: the stream ended with an error event\n"
    )


def test_max_retries_counts_streams_that_open_only_to_fail(server: tuple[App, str]) -> None:
    asgi, url = server
    before = asgi.seen.get("/error-retryable", 0)
    done = ssegate(
        "listen", url + "/error-retryable", "--max-retries", "2", "--compact", "--no-timestamps"
    )
    assert asgi.seen["/error-retryable"] - before == 3
    assert (done.code, done.stdout) == (
        4,
        'error {"code": "overloaded", "message": "Busy.", "retryable": true}\n' * 3,
    )
    opened = "* 200 OK (text/event-stream)\n"
    again = "* reconnecting in 0.0 s: the stream ended\n"
    assert done.stderr == (
        (opened + again) * 2
        + opened
        + f"* error: gave up on {url}/error-retryable after 3 failed attempts: "
        "the server kept ending the stream\n"
    )


# -- colour ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "stdout"),
    [
        ({"FORCE_COLOR": "1"}, "\x1b[1;36mmessage\x1b[0m\nx\n"),
        ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, "\x1b[1mmessage\x1b[0m\nx\n"),  # bold stays
    ],
)
def test_no_color_is_honoured(url: str, env: dict[str, str], stdout: str) -> None:
    done = ssegate("listen", url + "/crlf", "--no-reconnect", "--no-timestamps", env=env)
    assert (done.code, done.stdout) == (0, stdout)


def test_help_documents_the_exit_codes() -> None:
    done = ssegate("listen", "--help", env={"COLUMNS": "200"})
    assert (done.code, done.stderr) == (0, "")
    assert (
        "4 could not connect (an unknown host at once), the connection broke, or retries ran "
        "out; 5 a POST stream broke and could only go on by re-sending it (see --resend); 6 the "
        "server sent an `error` event that says retrying cannot help (with --until-done: any "
        "`error` event); 130 interrupted."
    ) in " ".join(done.stdout.split())
