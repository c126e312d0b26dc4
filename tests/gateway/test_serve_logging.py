"""``lean_log_records``: the records ``serve`` logs skip the process id, thread
and caller lookups, and every line reads exactly as before. ``log_writes_per_turn``:
the event loop's lines written once per turn, in order, nothing lost.
``asyncio_known``: sniffio told which library runs while the app serves."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import pytest
import sniffio
from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import AccessFormatter, DefaultFormatter

from ssegate.cli._formats import (
    ACCESS_FORMAT,
    SecondsFormatter,
    lean_access_formatter,
    lean_formatters,
)
from ssegate.cli._serve import TurnWrites, asyncio_known, lean_log_records, log_writes_per_turn

SERVE_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
_SWITCHES = ("logProcesses", "logThreads", "logMultiprocessing", "_srcfile")


@contextmanager
def _lean() -> Iterator[None]:
    """``lean_log_records()`` while inside; logging's switches as they were after."""
    saved = {name: getattr(logging, name) for name in _SWITCHES}
    lean_log_records()
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(logging, name, value)


@pytest.fixture
def lean() -> Iterator[None]:
    with _lean():
        yield


def _lines(logger: logging.Logger) -> list[str]:
    """What the gateway's line, uvicorn's access line and its error line print
    (``serve``'s format and uvicorn's own formatters), at a fixed time."""
    formatters: list[logging.Formatter] = [
        logging.Formatter(SERVE_FORMAT),
        AccessFormatter(LOGGING_CONFIG["formatters"]["access"]["fmt"], use_colors=False),
        DefaultFormatter(LOGGING_CONFIG["formatters"]["default"]["fmt"], use_colors=False),
    ]
    records = [
        logger.makeRecord(logger.name, logging.INFO, "f.py", 1, '{"stream":"gen_1"}', (), None),
        logger.makeRecord(
            logger.name,
            logging.INFO,
            "f.py",
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5000", "POST", "/v1/chat/completions", "1.1", 200),
            None,
        ),
        logger.makeRecord(logger.name, logging.INFO, "f.py", 1, "Started server", (), None),
    ]
    for record in records:
        record.created = 1_700_000_000.25
        record.msecs = 250.0
    return [f.format(r) for f, r in zip(formatters, records, strict=True)]


def test_lines_read_the_same_with_lean_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "localtime", time.gmtime)
    logger = logging.getLogger("ssegate.gateway.streams")
    before = _lines(logger)
    with _lean():
        assert _lines(logger) == before
    assert before == [
        '2023-11-14 22:13:20,250 ssegate.gateway.streams INFO {"stream":"gen_1"}',
        'INFO:     127.0.0.1:5000 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        "INFO:     Started server",
    ]


def test_lean_records_skip_the_lookups(lean: None) -> None:
    record = logging.getLogger("x").makeRecord("x", logging.INFO, "f.py", 1, "m", (), None)
    assert (record.process, record.thread, record.threadName, record.processName) == (
        None,
        None,
        None,
        None,
    )
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger = logging.getLogger("ssegate.test.lean")
    logger.propagate = False
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    logger.info("line")
    # No stack walk for the caller: logging's placeholders.
    assert (seen[0].pathname, seen[0].lineno, seen[0].funcName) == (
        "(unknown file)",
        0,
        "(unknown function)",
    )


class Recorded(io.StringIO):
    """A text stream noting each write it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_the_loops_lines_are_written_once_per_turn() -> None:
    stream = Recorded()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("ssegate.test.turns")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)

    async def main() -> None:
        with log_writes_per_turn():
            assert isinstance(handler.stream, TurnWrites)
            logger.info("one")
            logger.info("two")
            assert stream.writes == []
            await asyncio.sleep(0)  # the turn ends
            assert stream.writes == ["one\ntwo\n"]
            other = threading.Thread(target=logger.info, args=("from a thread",))
            other.start()
            other.join()
            assert stream.writes == ["one\ntwo\n", "from a thread\n"]  # at once
            logger.info("three")
        # Leaving writes what is pending, and the handler has its stream back.
        assert stream.writes == ["one\ntwo\n", "from a thread\n", "three\n"]
        assert handler.stream is stream
        await asyncio.sleep(0)  # the turn's scheduled write finds nothing more
        assert stream.getvalue() == "one\ntwo\nfrom a thread\nthree\n"

    try:
        asyncio.run(main())
    finally:
        logger.removeHandler(handler)


def test_once_the_loop_is_closed_lines_are_written_at_once() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    stream = Recorded()
    writes = TurnWrites(stream, loop)
    assert writes.write("late\n") == 5
    assert stream.writes == ["late\n"]
    assert writes.pending == []


def test_sniffio_knows_asyncio_while_serving_and_forgets_after() -> None:
    names: list[str | None] = []

    async def main() -> None:
        names.append(sniffio.thread_local.name)
        with asyncio_known():
            names.append(sniffio.thread_local.name)
            # Outside any task too (a callback of the loop), the same answer.
            answered: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(
                lambda: answered.set_result(sniffio.current_async_library())
            )
            names.append(await answered)
            assert isinstance(anyio.Event(), anyio.Event)
        names.append(sniffio.thread_local.name)

    asyncio.run(main())
    assert names == [None, "asyncio", "asyncio", None]


@pytest.mark.parametrize("name", ["trio", "preset"])
def test_sniffio_is_left_alone_under_another_library_or_a_set_name(name: str) -> None:
    async def main() -> str | None:
        with asyncio_known():
            return sniffio.thread_local.name

    if name == "trio":
        # trio names itself this same way: left as it is
        assert anyio.run(main, backend="trio") == "trio"
        return
    sniffio.thread_local.name = "asyncio"
    try:
        with asyncio_known():  # not in a loop here: nothing changes, nothing is undone
            assert sniffio.thread_local.name == "asyncio"
        assert sniffio.thread_local.name == "asyncio"
    finally:
        sniffio.thread_local.name = None


ACCESS_ARGS = [
    ("127.0.0.1:5000", "POST", "/v1/chat/completions", "1.1", 200),
    ("[::1]:443", "GET", "/v1/streams/gen_1?format=openai", "2", 404),
    ("", "GET", "/%C3%A9", "1.0", 599),  # no client address, a code with no phrase
    ("10.0.0.1:1", "HEAD", "/", "1.1", 204),
]


@pytest.mark.parametrize("args", ACCESS_ARGS)
@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING, logging.CRITICAL])
def test_the_lean_access_line_reads_as_uvicorns(args: tuple[object, ...], level: int) -> None:
    fmt = LOGGING_CONFIG["formatters"]["access"]["fmt"]
    assert fmt == ACCESS_FORMAT
    theirs = AccessFormatter(fmt, use_colors=False)
    lean = lean_access_formatter()
    logger = logging.getLogger("uvicorn.access")
    record = logger.makeRecord(logger.name, level, "f.py", 1, '%s - "%s %s HTTP/%s" %d', args, None)
    expected = theirs.format(record)
    assert lean.format(record) == expected
    assert lean.format(record) == expected  # again: the status text kept


def test_the_lean_access_line_formats_other_records_as_uvicorn() -> None:
    """Not an access line's five arguments, or with an exception: uvicorn's way."""
    theirs = AccessFormatter(ACCESS_FORMAT, use_colors=False)
    lean = lean_access_formatter()
    logger = logging.getLogger("uvicorn.access")
    args = ("127.0.0.1:5000", "POST", "/", "1.1", 500)
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failing = logger.makeRecord(
            logger.name, logging.ERROR, "f.py", 1, "%s%s%s%s%d", args, sys.exc_info()
        )
    assert lean.format(failing) == theirs.format(failing)
    assert "ValueError: boom" in lean.format(failing)
    four = logger.makeRecord(logger.name, logging.INFO, "f.py", 1, "%s%s%s%s", ("a",) * 4, None)
    with pytest.raises(ValueError, match="not enough values to unpack"):  # uvicorn's own refusal
        lean.format(four)
    # The code as text: the message's "%d" refuses it, as uvicorn's own does.
    text = logger.makeRecord(
        logger.name, logging.INFO, "f.py", 1, "%s%s%s%s%d", (*args[:4], "200"), None
    )
    with pytest.raises(TypeError):
        theirs.format(text)
    with pytest.raises(TypeError):
        lean.format(text)


def test_the_seconds_formatter_reads_as_loggings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "localtime", time.gmtime)
    ours = SecondsFormatter(SERVE_FORMAT)
    ours.converter = time.localtime  # as a fresh logging.Formatter's, read now
    theirs = logging.Formatter(SERVE_FORMAT)
    logger = logging.getLogger("ssegate.gateway.streams")
    lines = []
    for created in (1_700_000_000.25, 1_700_000_000.999, 1_700_000_001.0, 1_700_000_000.5, 59.0):
        record = logger.makeRecord(logger.name, logging.INFO, "f.py", 1, "line", (), None)
        record.created = created
        record.msecs = (created - int(created)) * 1000
        expected = theirs.format(record)
        assert ours.format(record) == expected
        lines.append(expected)
        assert ours.formatTime(record, "%H:%M") == theirs.formatTime(record, "%H:%M")
    assert lines[:3] == [
        "2023-11-14 22:13:20,250 ssegate.gateway.streams INFO line",
        "2023-11-14 22:13:20,999 ssegate.gateway.streams INFO line",
        "2023-11-14 22:13:21,000 ssegate.gateway.streams INFO line",
    ]


def test_lean_formatters_swap_exactly_the_known_ones_and_put_them_back() -> None:
    access = AccessFormatter(ACCESS_FORMAT, use_colors=False)
    plain = logging.Formatter(SERVE_FORMAT)
    kept = [
        AccessFormatter(ACCESS_FORMAT, use_colors=True),  # colours: uvicorn's own
        AccessFormatter("%(client_addr)s %(status_code)s", use_colors=False),  # another format
        DefaultFormatter(LOGGING_CONFIG["formatters"]["default"]["fmt"], use_colors=False),
        logging.Formatter(SERVE_FORMAT, datefmt="%H:%M:%S"),  # its own time format
        logging.Formatter("{asctime} {message}", style="{"),
        logging.Formatter(SERVE_FORMAT, defaults={"extra": "x"}),
    ]
    handlers = [logging.StreamHandler(io.StringIO()) for _ in range(2 + len(kept))]
    for handler, formatter in zip(handlers, [access, plain, *kept], strict=True):
        handler.setFormatter(formatter)
    logger = logging.getLogger("ssegate.test.formats")
    for handler in handlers:
        logger.addHandler(handler)
    try:
        with lean_formatters():
            assert type(handlers[0].formatter).__name__ == "LeanAccessFormatter"
            assert isinstance(handlers[0].formatter, AccessFormatter)
            assert type(handlers[1].formatter) is SecondsFormatter
            assert handlers[1].formatter._fmt == SERVE_FORMAT
            assert [h.formatter for h in handlers[2:]] == kept
        assert [h.formatter for h in handlers] == [access, plain, *kept]
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
