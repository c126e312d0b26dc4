"""``ssegate listen`` against a real server on 127.0.0.1, through typer's CliRunner."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from ssegate.cli import app
from ssegate.testing import serve

STREAM = [
    b": ping\n\n",
    b'id: 1\nevent: token\ndata: {"text": "hi", "n": [1, 2]}\n\n',
    b"id: 2\ndata: plain\ndata: two lines\n\n",
]


EVENT_STREAM = [(b"content-type", b"text/event-stream")]


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


def test_dropped_post_exits_5(url: str) -> None:
    result = listen(url + "/drop", "-d", "x")
    assert result.exit_code == 5
    assert result.stdout == "message\na\n"
    assert "pass resend=True" in result.stderr


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
    code = "from ssegate.cli import main; main()"
    cmd = [sys.executable, "-c", code, "listen", url + "/endless", "--compact", "--no-timestamps"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline() == b"message 0\n"
        proc.stdout.close()
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in stderr, stderr.decode()
    assert b"BrokenPipe" not in stderr
