"""What the commands show on a terminal: consoles, a spinner, and a quiet end on a closed pipe.

Output goes to stdout (the answer, the events) and feedback to stderr, so a
pipe receives only the output. Colour follows rich's rules (a terminal,
``NO_COLOR``, ``FORCE_COLOR``) unless a command's ``--no-color`` turns it off.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import IO

from rich.console import Console

__all__ = ["ClosedPipeConsole", "console", "silence_stdout", "spinner"]


class ClosedPipeConsole(Console):
    """A console that raises ``BrokenPipeError`` when its reader went away.

    Rich prints a message and exits with status 1 there; the command decides
    instead (a reader that leaves, ``| head -1``, ends it with 0).
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def console(file: IO[str], *, color: bool = True) -> Console:
    """A console on ``file``; ``color=False`` turns colour off, True leaves rich to decide.

    Rich's decision honours ``NO_COLOR`` (https://no-color.org), which a plain
    ``no_color=False`` would override.
    """
    return ClosedPipeConsole(
        file=file, soft_wrap=True, highlight=False, no_color=None if color else True
    )


@contextlib.contextmanager
def spinner(message: str) -> Iterator[None]:
    """A spinner with ``message`` on stderr while the block runs, if stderr is a terminal.

    It is drawn in place and erased when the block ends, so nothing of it stays
    in the terminal and nothing at all reaches a file or a pipe.
    """
    if not sys.stderr.isatty():
        yield
        return
    with console(sys.stderr).status(message, spinner="dots"):
        yield


def silence_stdout() -> None:
    """Point stdout at /dev/null so the final flush after a closed pipe does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real file (a test runner's buffer): nothing to flush
