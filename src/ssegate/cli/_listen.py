"""``ssegate listen URL``: a better ``curl -N`` for event streams.

Events go to stdout (type, id, data pretty-printed when it is JSON, a
timestamp); what happens to the connection (the response status, keep-alive
comments, reconnects) goes to stderr, so stdout stays clean for a pipe.
``--raw`` writes the exact bytes received instead.
"""

from __future__ import annotations

import json
import socket
import sys
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Annotated, BinaryIO

import httpx
import typer
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
from ..client._base import RESEND_ADVICE
from ..protocol import Event
from ._app import app
from ._terminal import console, silence_stdout
from ._usage import checked_url, fail

__all__ = ["ExitCode", "listen"]


class ExitCode(IntEnum):
    """How ``ssegate listen`` ended (its process exit status)."""

    OK = 0  #: the stream ended (204, --count, --until-done, or a complete POST answer)
    PROTOCOL = 1  #: the server broke the event-stream rules (e.g. an oversized event)
    USAGE = 2  #: bad command-line arguments (a malformed URL among them)
    RESPONSE = 3  #: the server answered with an error status or not with an event stream
    CONNECTION = 4  #: could not connect (an unknown host at once), the connection broke,
    #: or retries ran out
    NOT_RESUMABLE = 5  #: a POST stream broke and could only go on by re-sending it
    SERVER_ERROR = 6  #: the server sent an ``error`` event that retrying cannot fix
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
        fail(f"-H {value!r}: expected 'Name: value'")
    return name.strip(), rest.strip()


def _body(data: str | None, json_text: str | None) -> bytes | None:
    if data is not None and json_text is not None:
        fail("give -d/--data or --json, not both")
    if json_text is not None:
        try:
            json.loads(json_text)
        except ValueError as exc:
            fail(f"--json {json_text!r} is not valid JSON: {exc}")
        return json_text.encode()
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        try:
            return Path(data[1:]).read_bytes()
        except OSError as exc:
            fail(f"-d {data!r}: cannot read {data[1:]!r}: {exc.strerror or exc}")
    return data.encode()


class _Printer:
    """Shows events on stdout and connection status on stderr."""

    def __init__(self, *, raw: bool, compact: bool, timestamps: bool, color: bool) -> None:
        self.raw = raw
        self.compact = compact
        self.timestamps = timestamps
        self.out = console(sys.stdout, color=color)
        self.err = console(sys.stderr, color=color)
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
        hopeless = _hopeless(error)
        if hopeless is not None:
            raise hopeless  # ends the iteration: no wait, no retry
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
    url: Annotated[
        str,
        typer.Argument(
            help="The event-stream URL (http:// or https://).",
            callback=lambda value: checked_url(value),
        ),
    ],
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

    Errors that no retry can fix end it at once: a malformed URL, a host name
    that does not resolve, a server's error status other than 429 and 5xx, and
    an `error` event whose JSON data says "retryable": false.

    Exit status: 0 the stream ended (HTTP 204, --count, --until-done, or a POST
    answer that finished); 1 the server broke the event-stream rules; 2 bad
    arguments (a malformed URL among them); 3 the server answered an error
    status or not an event stream; 4 could not connect (an unknown host at
    once), the connection broke, or retries ran out; 5 a POST stream broke and
    could only go on by re-sending it (see --resend); 6 the server sent an
    `error` event that says retrying cannot help (with --until-done: any
    `error` event); 130 interrupted. A reader that goes away (`| head`) ends
    it with 0.
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
        fail(str(exc))
    code = ExitCode.OK
    try:
        with source:
            events = source.until_done() if until_done else source
            for n, event in enumerate(events, 1):
                printer.event(event)
                if event.event == "error":
                    ending = _error_event_ends(event, until_done=until_done)
                    if ending is not None:
                        printer.status(ending, "bold red")
                        code = ExitCode.SERVER_ERROR
                        break
                if count is not None and n >= count:
                    break
        if source.status_code == 204:
            printer.status("the server ended the stream (204)", "green")
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`ssegate listen URL | head`): that is its answer.
        silence_stdout()
    except NotResumableError as exc:
        # The library's advice names its argument; the command's is an option.
        printer.status(f"error: {exc}".replace(RESEND_ADVICE, _RESEND_OPTION), "bold red")
        code = ExitCode.NOT_RESUMABLE
    except SSEGateError as exc:
        printer.status(f"error: {exc}", "bold red")
        code = _exit_code(exc)
    raise typer.Exit(int(code))


_RESEND_OPTION = "pass --resend to allow that"

# getaddrinfo's answers for a name that does not exist (or has no address, or
# whose servers refused for good). EAI_AGAIN, "temporary failure in name
# resolution" (the network is down, say), is not among them: it is retried.
_NO_SUCH_HOST = frozenset(
    getattr(socket, name)
    for name in ("EAI_NONAME", "EAI_NODATA", "EAI_FAIL", "EAI_ADDRFAMILY")
    if hasattr(socket, name)
)


def _hopeless(error: SSEGateError | None) -> TransportError | None:
    """The error to stop at instead of retrying, if no retry can fix ``error``.

    A host name that does not resolve stays a typo, however long one waits.
    A refused connection is retried: a server that is starting up refuses.
    """
    if not isinstance(error, TransportError):
        return None
    cause: BaseException | None = error.__cause__
    while cause is not None:
        if isinstance(cause, socket.gaierror) and cause.errno in _NO_SUCH_HOST:
            return TransportError(f"{error} (the host name does not resolve: not retrying)")
        cause = cause.__cause__ or cause.__context__
    return None


def _error_event_ends(event: Event, *, until_done: bool) -> str | None:
    """What to say when an ``error`` event ends the command, or None to go on.

    ssegate's error events carry ``{"code", "message", "retryable"}``: one
    marked ``"retryable": false`` would only come again. With --until-done any
    ``error`` event is the end of the stream.
    """
    parsed = _json_or_none(event.data)
    if isinstance(parsed, dict) and parsed.get("retryable") is False:
        return 'error: the server sent an error event marked "retryable": false; not reconnecting'
    if until_done:
        return "error: the stream ended with an error event"
    return None


def _exit_code(exc: SSEGateError) -> ExitCode:
    if isinstance(exc, ResponseError):
        return ExitCode.RESPONSE
    if isinstance(exc, NotResumableError):
        return ExitCode.NOT_RESUMABLE
    if isinstance(exc, (TransportError, RetriesExhausted)):
        return ExitCode.CONNECTION
    return ExitCode.PROTOCOL
