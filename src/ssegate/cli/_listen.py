"""``ssegate listen URL``: a better ``curl -N`` for event streams.

Events go to stdout (type, id, data pretty-printed when it is JSON, a
timestamp); what happens to the connection (the response status, keep-alive
comments, reconnects) goes to stderr, so stdout stays clean for a pipe.
``--raw`` writes the exact bytes received instead.
"""

from __future__ import annotations

import io
import json
import os
import sys
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Annotated, BinaryIO

import httpx
import typer
from rich.console import Console
from rich.json import JSON
from rich.text import Text

from .._exceptions import (
    NotResumableError,
    ResponseError,
    RetriesExhausted,
    SSEGateError,
    TransportError,
)
from ..client import DEFAULT_READ_TIMEOUT, EventSource
from ..protocol import Event
from ._app import app

__all__ = ["ExitCode", "listen"]


class ExitCode(IntEnum):
    """How ``ssegate listen`` ended (its process exit status)."""

    OK = 0  #: the stream ended (204, --count, --until-done, or a complete POST answer)
    PROTOCOL = 1  #: the server broke the event-stream rules (e.g. an oversized event)
    USAGE = 2  #: bad command-line arguments
    RESPONSE = 3  #: the server answered with an error status or not with an event stream
    CONNECTION = 4  #: could not connect, the connection broke, or retries ran out
    NOT_RESUMABLE = 5  #: a POST stream broke and could only go on by re-sending it
    INTERRUPTED = 130  #: Ctrl-C


class _Comments:
    """Find the comment lines (keep-alives) in the bytes of one connection.

    The decoder drops comments, as the spec says; this reports them for display.
    Lines end with CR, LF or CRLF, and a CRLF may be split across chunks.
    """

    def __init__(self) -> None:
        self._partial = b""
        self._skip_lf = False
        self._start = True

    def feed(self, chunk: bytes) -> list[str]:
        if self._start:
            self._start = False
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = chunk[-1:] == b"\r"
        lines = (self._partial + chunk).replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._partial = lines.pop()
        return [
            line[1:].decode("utf-8", "replace").removeprefix(" ")
            for line in lines
            if line[:1] == b":"
        ]


def _header(value: str) -> tuple[str, str]:
    name, colon, rest = value.partition(":")
    if not colon or not name.strip():
        raise typer.BadParameter(f"expected 'Name: value', got {value!r}", param_hint="-H")
    return name.strip(), rest.strip()


def _body(data: str | None, json_text: str | None) -> bytes | None:
    if data is not None and json_text is not None:
        raise typer.BadParameter("give -d/--data or --json, not both")
    if json_text is not None:
        try:
            json.loads(json_text)
        except ValueError as exc:
            raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--json") from exc
        return json_text.encode()
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        try:
            return Path(data[1:]).read_bytes()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {data[1:]!r}: {exc}", param_hint="-d") from exc
    return data.encode()


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # Rich exits with status 1 here; the command decides instead.
        self.quiet = True
        raise BrokenPipeError


class _Printer:
    """Shows events on stdout and connection status on stderr."""

    def __init__(self, *, raw: bool, compact: bool, timestamps: bool, color: bool) -> None:
        self.raw = raw
        self.compact = compact
        self.timestamps = timestamps
        self.out = _Console(file=sys.stdout, soft_wrap=True, highlight=False, no_color=not color)
        self.err = _Console(file=sys.stderr, soft_wrap=True, highlight=False, no_color=not color)
        self.binary: BinaryIO = typer.get_binary_stream("stdout")
        self._comments = _Comments()

    def _stamp(self) -> Text:
        if not self.timestamps:
            return Text()
        return Text(datetime.now().strftime("%H:%M:%S.%f")[:-3] + " ", style="dim")

    def status(self, message: str, style: str = "yellow") -> None:
        self.err.print(self._stamp() + Text(f"* {message}", style=style))

    def response(self, response: httpx.Response) -> None:
        self._comments = _Comments()
        kind = response.headers.get("content-type", "no content type")
        self.status(f"{response.status_code} {response.reason_phrase} ({kind})", "green")

    def chunk(self, chunk: bytes) -> None:
        if self.raw:
            self.binary.write(chunk)
            self.binary.flush()
            return
        for comment in self._comments.feed(chunk):
            self.status(f"keep-alive: {comment}" if comment else "keep-alive", "dim")

    def reconnecting(self, delay: float, error: SSEGateError | None) -> None:
        why = f": {error}" if error is not None else ": the stream ended"
        self.status(f"reconnecting in {delay:.1f} s{why}")

    def event(self, event: Event) -> None:
        if self.raw:
            return
        head = self._stamp() + Text(event.event, style="bold cyan")
        if event.id:
            head += Text(f" id={event.id}", style="magenta")
        if event.retry is not None:
            head += Text(f" retry={event.retry}", style="magenta")
        parsed = _json_or_none(event.data)
        if self.compact:
            data = event.data if parsed is None else json.dumps(parsed, ensure_ascii=False)
            self.out.print(head + Text(" ") + Text(data))
        elif parsed is not None:
            self.out.print(head)
            self.out.print(JSON(event.data, indent=2))
        else:
            self.out.print(head)
            self.out.print(Text(event.data))


def _json_or_none(data: str) -> object | None:
    """The data as JSON when it is a JSON object or array (a bare "42" stays text)."""
    if not data.lstrip().startswith(("{", "[")):
        return None
    try:
        parsed: object = json.loads(data)
    except ValueError:
        return None
    return parsed


@app.command()
def listen(
    url: Annotated[str, typer.Argument(help="The event-stream URL (http:// or https://).")],
    method: Annotated[
        str | None,
        typer.Option("-X", "--method", help="HTTP method (default GET, or POST with a body)."),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option("-H", "--header", help="A request header 'Name: value' (repeatable)."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("-d", "--data", help="Request body; @FILE reads a file, @- stdin."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="SSEGATE_API_KEY",
            help="Send 'Authorization: Bearer KEY' (unless -H sets Authorization).",
        ),
    ] = None,
    json_text: Annotated[
        str | None,
        typer.Option("--json", help="JSON request body (sets Content-Type)."),
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Write the exact bytes received to stdout.")
    ] = False,
    count: Annotated[
        int | None, typer.Option("-n", "--count", min=1, help="Stop after N events.")
    ] = None,
    until_done: Annotated[
        bool,
        typer.Option("--until-done", help="Stop at a terminal event ([DONE], done, error, close)."),
    ] = False,
    last_event_id: Annotated[
        str | None, typer.Option("--last-event-id", help="Resume after this event id.")
    ] = None,
    reconnect: Annotated[
        bool,
        typer.Option("--reconnect/--no-reconnect", help="Reconnect when the connection drops."),
    ] = True,
    max_retries: Annotated[
        int | None,
        typer.Option("--max-retries", min=0, help="Give up after N failed attempts in a row."),
    ] = None,
    read_timeout: Annotated[
        float,
        typer.Option("--read-timeout", min=0.001, help="Seconds without a byte = dropped."),
    ] = DEFAULT_READ_TIMEOUT,
    resend: Annotated[
        bool,
        typer.Option("--resend", help="Allow re-sending a dropped POST that cannot resume."),
    ] = False,
    compact: Annotated[
        bool, typer.Option("--compact", help="One line per event, JSON not indented.")
    ] = False,
    timestamps: Annotated[
        bool, typer.Option("--timestamps/--no-timestamps", help="Show the time of each line.")
    ] = True,
    color: Annotated[
        bool, typer.Option("--color/--no-color", help="Colour the output (on a terminal).")
    ] = True,
) -> None:
    """Print the events of a stream as they arrive, reconnecting like a browser.

    Exit status: 0 the stream ended (HTTP 204, --count, --until-done, or a POST
    answer that finished); 1 the server broke the event-stream rules; 2 bad
    arguments; 3 the server answered an error status or not an event stream;
    4 could not connect, the connection broke, or retries ran out; 5 a POST
    stream broke and could only go on by re-sending it (see --resend);
    130 interrupted. A reader that goes away (`| head`) ends it with 0.
    """
    headers = dict(_header(h) for h in header or [])
    if api_key and not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = f"Bearer {api_key}"
    body = _body(data, json_text)
    if json_text is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    if method is None:
        method = "GET" if body is None else "POST"
    printer = _Printer(raw=raw, compact=compact, timestamps=timestamps, color=color)
    try:
        source = EventSource(
            url,
            method=method,
            headers=headers,
            content=body,
            last_event_id=last_event_id,
            reconnect=reconnect,
            max_retries=max_retries,
            read_timeout=read_timeout,
            resend=resend,
            on_response=printer.response,
            on_bytes=printer.chunk,
            on_reconnect=printer.reconnecting,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    code = ExitCode.OK
    try:
        with source:
            events = source.until_done() if until_done else source
            for n, event in enumerate(events, 1):
                printer.event(event)
                if count is not None and n >= count:
                    break
        if source.status_code == 204:
            printer.status("the server ended the stream (204)", "green")
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`ssegate listen URL | head`): that is its answer.
        _silence_stdout()
    except SSEGateError as exc:
        printer.status(f"error: {exc}", "bold red")
        code = _exit_code(exc)
    raise typer.Exit(int(code))


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real file (a test runner's buffer): nothing to flush


def _exit_code(exc: SSEGateError) -> ExitCode:
    if isinstance(exc, ResponseError):
        return ExitCode.RESPONSE
    if isinstance(exc, NotResumableError):
        return ExitCode.NOT_RESUMABLE
    if isinstance(exc, (TransportError, RetriesExhausted)):
        return ExitCode.CONNECTION
    return ExitCode.PROTOCOL
