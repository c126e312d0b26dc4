"""The two lines every stream logs, written without ``logging``'s per-record steps.

Each stream start logs uvicorn's access line (``uvicorn.access``) and, at its
end, the gateway's own (``ssegate.gateway.streams``): ~45 000 instructions a
line through ``Logger.info`` (the record and its 20 fields, the handler
look-up up the logger tree, filters, locks, the formatter's steps), ~6 % of a
relayed stream start's. While ``serve``'s app runs, ``lean_lines()`` gives
those two loggers an ``info`` that writes the very line their one handler
would: the same text, to the same ``TurnWrites`` (``_serve``), under the
handler's lock, made from the message, its arguments and the time alone.

Only where what the line goes through is exactly what ``serve`` sets up, looked
at on every call: the logger enabled for ``INFO`` with no filters, one handler
on its way up the tree (a plain ``StreamHandler`` writing through a
``TurnWrites``, no filters, a level that lets ``INFO`` through) with one of
``_formats``' lean formatters (uvicorn's access format, or the root format of
``serve`` with its time). Anything else (a keyword argument such as
``exc_info``, a handler or filter added since, another format, a failure while
writing) goes ``logging``'s own way.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._formats import SecondsFormatter, access_line, lean_access_formatter

__all__ = ["LINE_LOGGERS", "SERVE_FORMAT", "LeanInfo", "lean_lines"]

#: The loggers of the lines every stream logs.
LINE_LOGGERS = ("uvicorn.access", "ssegate.gateway.streams")

#: ``serve``'s root format (``logging.basicConfig``).
SERVE_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

_INFO = logging.INFO

#: Whether a record's time is ``time.time()`` with its milliseconds as here
#: (``LogRecord.__init__`` up to 3.12; later versions count in nanoseconds).
_TIME_AS_HERE = sys.version_info < (3, 13)


class LeanInfo:
    """``logger.info`` writing the line straight where ``serve``'s handler would
    (see the module docstring); ``logging``'s own way for anything else."""

    __slots__ = ("access", "logger")

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.access = type(lean_access_formatter())

    def __call__(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        logger = self.logger
        if not kwargs and logger.isEnabledFor(_INFO) and not logger.filters:
            handler = _one_handler(logger)
            if handler is not None and self._write(handler, msg, args):
                return
        logging.Logger.info(logger, msg, *args, **kwargs)

    def _write(self, handler: logging.StreamHandler[Any], msg: Any, args: tuple[Any, ...]) -> bool:
        """Write the line as ``handler`` would (under its lock, as ``Handler.handle``
        does); ``False``, nothing written, where it cannot (then ``logging``'s way
        writes it, or says what went wrong)."""
        with handler.lock:  # type: ignore[union-attr]
            stream = handler.stream
            try:
                text = self.line(handler.formatter, msg, args)
                if text is None:
                    return False
                stream.write(text + handler.terminator)
            except Exception:
                return False
            try:
                stream.flush()  # what StreamHandler.flush does, the lock held already
            except Exception:  # as StreamHandler.emit: the handler says so
                logger = self.logger
                record = logger.makeRecord(logger.name, _INFO, "(unknown file)", 0, msg, args, None)
                handler.handleError(record)
        return True

    def line(self, formatter: Any, msg: Any, args: tuple[Any, ...]) -> str | None:
        """The text ``formatter`` makes of an ``INFO`` record of ``msg`` and ``args``
        from this logger, now; ``None`` where it is not one of the lean ones."""
        kind = type(formatter)
        levelname = logging.getLevelName(_INFO)
        if kind is self.access:
            return access_line(levelname, args)
        if (
            kind is SecondsFormatter
            and _TIME_AS_HERE
            and formatter.datefmt is None
            and formatter._style._fmt == SERVE_FORMAT
            and (not args or (type(args) is tuple and len(args) != 1))
        ):
            message = str(msg)
            if args:
                message = message % args
            created = time.time()
            msecs = int((created - int(created)) * 1000) + 0.0
            asctime = formatter.asctime(created, msecs)
            return f"{asctime} {self.logger.name} {levelname} {message}"
        return None


def _one_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The one handler a record of ``logger`` reaches, if it is a plain
    ``StreamHandler`` writing through a ``TurnWrites`` that takes ``INFO``
    unfiltered; else ``None``."""
    found: Any = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None:
                return None  # more than one
            found = handler
        current = current.parent if current.propagate else None
    if (
        type(found) is not logging.StreamHandler
        or found.filters
        or found.level > _INFO
        or type(found.stream) is not _turn_writes()
    ):
        return None
    return found


_TURN_WRITES: list[type] = []


def _turn_writes() -> type:
    """``_serve.TurnWrites`` (imported once, not at import: ``_serve`` imports this)."""
    if not _TURN_WRITES:
        from ._serve import TurnWrites

        _TURN_WRITES.append(TurnWrites)
    return _TURN_WRITES[0]


@contextmanager
def lean_lines() -> Iterator[None]:
    """While inside: the loggers of ``LINE_LOGGERS`` log ``INFO`` through a
    ``LeanInfo``; after, through ``logging`` again."""
    given: list[logging.Logger] = []
    for name in LINE_LOGGERS:
        logger = logging.getLogger(name)
        if "info" not in vars(logger):
            logger.info = LeanInfo(logger)  # type: ignore[method-assign]
            given.append(logger)
    try:
        yield
    finally:
        for logger in given:
            if isinstance(vars(logger).get("info"), LeanInfo):
                del logger.info
