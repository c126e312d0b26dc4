"""Refusing bad input at the edge: one line on stderr, naming what was typed, and exit 2.

Every command checks what the user typed before doing anything with it, so a
mistake reads as a sentence, never as a traceback. Typer's own checks (an
unknown option, ``--max-tokens 0``) keep its boxed format; the checks here are
the ones typer cannot make: URLs, prompts, headers, bodies.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from ..client._base import http_url

__all__ = ["USAGE", "checked_url", "fail", "read_stdin"]

#: The exit status of a usage error, for every command (click's own as well).
USAGE = 2


def fail(message: str, code: int = USAGE) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def checked_url(value: str, option: str = "") -> str:
    """``value`` if it is an http(s) URL a connection could use; else ``fail`` naming ``option``.

    The one URL check of the command line (``listen URL``, ``chat --base-url``),
    the same as the client library's: a scheme, a host, a port in range.
    """
    try:
        http_url(value)
    except ValueError as exc:
        fail(f"{option} {exc}" if option else str(exc))
    return value


def read_stdin(what: str) -> str:
    """All of stdin as text (``-`` in place of an argument); ``fail`` if it is not UTF-8."""
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{what} read from stdin is not UTF-8 text: {exc}")
