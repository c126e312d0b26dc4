"""``lean_lines``: while ``serve``'s app runs, the two lines every stream logs
(uvicorn's access line, the gateway's own) are written straight where their one
handler would write them, and read exactly as ``logging``'s: the same text in
the same order, for every message; anything else goes ``logging``'s way."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import pytest
from test_serve_logging import _lean

from ssegate.cli._formats import ACCESS_FORMAT, SecondsFormatter, lean_access_formatter
from ssegate.cli._lines import LINE_LOGGERS, SERVE_FORMAT, LeanInfo, lean_lines
from ssegate.cli._serve import TurnWrites

ACCESS = '%s - "%s %s HTTP/%s" %d'
ACCESS_ARGS = ("127.0.0.1:5000", "POST", "/v1/chat/completions", "1.1", 200)


@contextmanager
def _serving(stream: io.StringIO, loop: asyncio.AbstractEventLoop) -> Iterator[TurnWrites]:
    """``serve``'s two handlers (root: serve's format; uvicorn.access: its own,
    not propagating), lean formatters, writing through one ``TurnWrites``."""
    writes = TurnWrites(stream, loop)
    root, access = logging.getLogger(), logging.getLogger("uvicorn.access")
    saved = (root.handlers[:], root.level, access.handlers[:], access.level, access.propagate)
    root_handler = logging.StreamHandler(writes)
    root_handler.setFormatter(SecondsFormatter(SERVE_FORMAT))
    access_handler = logging.StreamHandler(writes)
    access_handler.setFormatter(lean_access_formatter())
    root.handlers[:] = [root_handler]
    root.setLevel(logging.INFO)
    access.handlers[:] = [access_handler]
    access.setLevel(logging.INFO)
    access.propagate = False
    try:
        with _lean():
            yield writes
    finally:
        writes.flush_pending()
        root.handlers[:], root.level = saved[0], saved[1]
        access.handlers[:], access.level, access.propagate = saved[2], saved[3], saved[4]


def _written(
    lean: bool, log: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> tuple[str, int]:
    """What ``log()`` writes (at a fixed time), and how many of its ``info`` calls
    went ``logging``'s own way."""
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)
    monkeypatch.setattr(time, "localtime", time.gmtime)
    general = 0
    info = logging.Logger.info

    def counted(self: logging.Logger, *args: Any, **kwargs: Any) -> None:
        nonlocal general
        general += 1
        info(self, *args, **kwargs)

    monkeypatch.setattr(logging.Logger, "info", counted)
    stream = io.StringIO()

    async def main() -> None:
        with _serving(stream, asyncio.get_running_loop()), lean_lines() if lean else nullcontext():
            log()
            await asyncio.sleep(0)

    asyncio.run(main())
    monkeypatch.undo()
    return stream.getvalue(), general


def _both(log: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> tuple[str, int]:
    """What ``log()`` writes lean, asserted the same as ``logging``'s; and how many
    of its calls the lean way left to ``logging``."""
    lean, left = _written(True, log, monkeypatch)
    general, _ = _written(False, log, monkeypatch)
    assert lean == general
    return lean, left


ACCESS_LOG = logging.getLogger("uvicorn.access")
STREAMS_LOG = logging.getLogger("ssegate.gateway.streams")


def test_the_two_lines_read_the_same_and_take_the_lean_way(monkeypatch: pytest.MonkeyPatch) -> None:
    def log() -> None:
        STREAMS_LOG.info('{"stream":"gen_1","model":"m","end":"stop"}')
        ACCESS_LOG.info(ACCESS, *ACCESS_ARGS)
        STREAMS_LOG.info("%s of %d", "one", 2)
        ACCESS_LOG.info(ACCESS, "", "GET", "/v1/streams/x?format=openai", "1.0", 404)
        STREAMS_LOG.info(12345)  # not a string: its str()

    written, general = _both(log, monkeypatch)
    assert general == 0
    assert written.splitlines() == [
        "2023-11-14 22:13:20,250 ssegate.gateway.streams INFO "
        '{"stream":"gen_1","model":"m","end":"stop"}',
        'INFO:     127.0.0.1:5000 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        "2023-11-14 22:13:20,250 ssegate.gateway.streams INFO one of 2",
        'INFO:      - "GET /v1/streams/x?format=openai HTTP/1.0" 404 Not Found',
        "2023-11-14 22:13:20,250 ssegate.gateway.streams INFO 12345",
    ]


@pytest.mark.parametrize(
    "case",
    ["exc_info", "mapping", "other args", "bad args", "filter", "two handlers", "level", "format"],
)
def test_anything_else_goes_loggings_way_with_the_same_outcome(
    case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()

    def log() -> None:
        if case == "exc_info":
            try:
                raise ValueError("boom")
            except ValueError:
                STREAMS_LOG.info("failed", exc_info=True)
        elif case == "mapping":
            STREAMS_LOG.info("%(a)s", {"a": 1})
        elif case == "other args":
            ACCESS_LOG.info("%s %s", "a", "b")
        elif case == "bad args":
            STREAMS_LOG.info("%d", "not a number")  # logging says so, raises nothing
        elif case == "filter":
            STREAMS_LOG.addFilter(lambda record: False)
            try:
                STREAMS_LOG.info("filtered")
            finally:
                STREAMS_LOG.filters.clear()
        elif case == "two handlers":
            extra = logging.StreamHandler(root.handlers[0].stream)
            extra.setFormatter(logging.Formatter("extra %(message)s"))
            root.addHandler(extra)
            try:
                STREAMS_LOG.info("twice")
            finally:
                root.removeHandler(extra)
        elif case == "level":
            STREAMS_LOG.setLevel(logging.WARNING)
            try:
                STREAMS_LOG.info("not shown")
            finally:
                STREAMS_LOG.setLevel(logging.NOTSET)
        elif case == "format":
            handler = ACCESS_LOG.handlers[0]
            handler.setFormatter(
                logging.Formatter(ACCESS_FORMAT.replace("%(levelprefix)s", "%(levelname)s"))
            )
            ACCESS_LOG.info(ACCESS, *ACCESS_ARGS)

    _, general = _both(log, monkeypatch)
    assert general == 1  # the call went logging's way
    if case == "bad args":
        assert "--- Logging error ---" in capsys.readouterr().err


def test_it_gives_each_line_logger_its_info_and_takes_it_back() -> None:
    with lean_lines():
        for name in LINE_LOGGERS:
            assert isinstance(vars(logging.getLogger(name)).get("info"), LeanInfo)
        with lean_lines():  # already lean: left as it is
            pass
        assert isinstance(vars(STREAMS_LOG).get("info"), LeanInfo)
    for name in LINE_LOGGERS:
        assert "info" not in vars(logging.getLogger(name))
