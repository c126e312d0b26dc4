"""The two lines every stream logs, formatted for less: the same text, fewer steps.

Each stream start logs uvicorn's access line and, at its end, the gateway's own
line (``ssegate.gateway.streams``, ``serve``'s root format with ``asctime``).

- uvicorn's ``AccessFormatter`` copies the record twice (``copy.copy``: its own
  ``formatMessage`` and its base class's), looks the status up in
  ``http.HTTPStatus`` and fills the format through ``%``-style mapping. With its
  default format and no colours, ``LeanAccessFormatter`` writes the same line
  from the record's arguments in one f-string (0.3 against 6.1 µs a line here).
- ``logging.Formatter.formatTime`` calls ``localtime`` and ``strftime`` for
  every record; ``SecondsFormatter`` keeps the text of the last second it
  formatted (the same function of the whole second) and adds the milliseconds
  (the line 1.4 against 2.0 µs).

``lean_formatters()`` puts them on the handlers that have exactly those
formatters (any other format, colours, or a formatter of another class keeps
its own), and puts the originals back after.
"""

from __future__ import annotations

import http
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "ACCESS_FORMAT",
    "SecondsFormatter",
    "access_line",
    "lean_access_formatter",
    "lean_formatters",
]

#: uvicorn's default access format (``uvicorn.config.LOGGING_CONFIG``), the one
#: ``LeanAccessFormatter`` writes without ``%``-formatting.
ACCESS_FORMAT = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'


def _access_formatter() -> type[logging.Formatter] | None:
    try:
        from uvicorn.logging import AccessFormatter
    except ImportError:  # pragma: no cover (uvicorn is a dependency of the gateway)
        return None
    return AccessFormatter


class SecondsFormatter(logging.Formatter):
    """``logging.Formatter`` whose ``asctime`` text is made once per second.

    The default time format (no ``datefmt``) is ``strftime`` of the record's
    whole second (its ``converter``: local time) plus ``,<milliseconds>``: the
    same second gives the same text, kept here.
    """

    #: The last second formatted and its text: one tuple, replaced whole (threads).
    _last: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self.asctime(record.created, record.msecs)

    def asctime(self, created: float, msecs: float) -> str:
        """The default format's time of a record ``created`` then (``msecs``: its milliseconds)."""
        second = int(created)
        last = self._last
        if last[0] != second:
            text = time.strftime(self.default_time_format, self.converter(created))
            self._last = last = (second, text)
        msec_format = self.default_msec_format
        return last[1] if msec_format is None else msec_format % (last[1], msecs)


#: Status code -> uvicorn's text for it (``"200 OK"``), as ``get_status_code`` makes it.
_STATUS: dict[int, str] = {}


def _status(code: int) -> str:
    text = _STATUS.get(code)
    if text is None:
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = ""
        text = f"{code} {phrase}"
        if len(_STATUS) < 1000:
            _STATUS[code] = text
    return text


def _lean_access_class(base: type[logging.Formatter]) -> type[logging.Formatter]:
    class LeanAccessFormatter(base):  # type: ignore[misc,valid-type]
        """uvicorn's ``AccessFormatter`` (default format, no colours) without its
        record copies: the same line (see the module docstring)."""

        def format(self, record: logging.LogRecord) -> str:
            line = None
            if not (record.exc_info or record.exc_text or record.stack_info):
                line = access_line(record.levelname, record.args)
            if line is None:
                return super().format(record)  # type: ignore[no-any-return]
            return line

    return LeanAccessFormatter


def access_line(levelname: str, args: Any) -> str | None:
    """uvicorn's access line (default format, no colours) of a record's level
    name and arguments; ``None`` for arguments not as uvicorn gives them."""
    if type(args) is not tuple or len(args) != 5 or type(args[4]) is not int:
        return None  # (uvicorn's message says %d)
    client_addr, method, full_path, http_version, code = args
    status = _status(code)
    # levelprefix: the name padded to 8 and a colon, as ColourizedFormatter's.
    return (
        f"{levelname}:{' ' * (8 - len(levelname))} {client_addr} - "
        f'"{method} {full_path} HTTP/{http_version}" {status}'
    )


_LEAN_ACCESS: list[Any] = []


def lean_access_formatter() -> logging.Formatter:
    """A ``LeanAccessFormatter`` (uvicorn's ``AccessFormatter`` subclassed once,
    uvicorn imported only when one is asked for)."""
    if not _LEAN_ACCESS:
        base = _access_formatter()
        if base is None:  # pragma: no cover
            raise RuntimeError("uvicorn is not installed")
        _LEAN_ACCESS.append(_lean_access_class(base))
    formatter: logging.Formatter = _LEAN_ACCESS[0](ACCESS_FORMAT, use_colors=False)
    return formatter


def _lean(formatter: logging.Formatter | None) -> logging.Formatter | None:
    """The lean twin of ``formatter`` where there is one; else ``None``."""
    if formatter is None:
        return None
    kind = type(formatter)
    style: Any = getattr(formatter, "_style", None)
    if type(style) is not logging.PercentStyle or getattr(style, "_defaults", None):
        return None
    if kind is logging.Formatter:
        if formatter.datefmt is not None or formatter.converter is not time.localtime:
            return None
        if (formatter.default_time_format, formatter.default_msec_format) != (
            logging.Formatter.default_time_format,
            logging.Formatter.default_msec_format,
        ):
            return None
        return SecondsFormatter(style._fmt, validate=False)
    access = _access_formatter()
    if (
        access is not None
        and kind is access
        and style._fmt == ACCESS_FORMAT
        and getattr(formatter, "use_colors", True) is False
    ):
        return lean_access_formatter()
    return None


@contextmanager
def lean_formatters() -> Iterator[None]:
    """While inside: every handler of every logger with a formatter that has a lean
    twin formats with the twin; after, with its own again."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    swapped: list[tuple[logging.Handler, logging.Formatter]] = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if any(h is handler for h, _ in swapped):
                continue
            own = handler.formatter
            lean = _lean(own)
            if own is not None and lean is not None:
                handler.setFormatter(lean)
                swapped.append((handler, own))
    try:
        yield
    finally:
        for handler, own in swapped:
            handler.setFormatter(own)
