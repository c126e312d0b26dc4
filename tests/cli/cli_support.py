"""Running the real ``ssegate`` command in a subprocess, as a user runs it.

The environment is built from nothing (no inherited ``NO_COLOR``, ``COLUMNS``,
API keys...), so what a test sees depends only on what it passes.
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from ssegate.client._base import http_url

__all__ = [
    "MALFORMED_URLS",
    "SSEGATE",
    "Done",
    "env_for",
    "head_1",
    "interrupt_after",
    "on_a_terminal",
    "ssegate",
    "url_message",
]

#: The console script the package installs, beside this interpreter.
SSEGATE = Path(sys.executable).parent / "ssegate"


#: What users type where a URL belongs (the messages are pinned in tests/client/test_urls.py).
MALFORMED_URLS = [
    "127.0.0.1:8080/v1",
    "notaurl",
    "ftp://files.example/x",
    "http://127.0.0.1:99999/v1",
    "http:///events",
    "http://a host/",
    "http://[::1",
]


def url_message(url: str) -> str:
    """The library's sentence for what is wrong with ``url`` (the commands print it)."""
    with pytest.raises(ValueError, match=r"URL|host|port") as caught:
        http_url(url)
    return str(caught.value)


@dataclass(frozen=True)
class Done:
    code: int
    stdout: str
    stderr: str


def env_for(env: Mapping[str, str] | None) -> dict[str, str]:
    return {"PATH": str(SSEGATE.parent), "LC_ALL": "C.UTF-8", **(env or {})}


def ssegate(
    *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None, timeout: float = 60
) -> Done:
    """Run ``ssegate ARGS`` to the end; its exit status, stdout and stderr."""
    done = subprocess.run(
        [str(SSEGATE), *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
        env=env_for(env),
    )
    return Done(done.returncode, done.stdout, done.stderr)


def on_a_terminal(
    *args: str,
    env: Mapping[str, str] | None = None,
    interrupt_at: str | None = None,
    timeout: float = 90,
) -> Done:
    """Run ``ssegate ARGS`` with stderr on a pseudo-terminal (stdout stays a pipe).

    ``stderr`` is everything written to the terminal, control sequences and all
    (the pty turns ``\\n`` into ``\\r\\n``). With ``interrupt_at``, Ctrl-C
    (SIGINT) is pressed once the terminal shows that text.
    """
    primary, secondary = pty.openpty()
    with subprocess.Popen(
        [str(SSEGATE), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=env_for(env),
    ) as proc:
        os.close(secondary)
        terminal = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            terminal += chunk
            if interrupt_at is not None and interrupt_at.encode() in terminal:
                proc.send_signal(signal.SIGINT)
                interrupt_at = None
        os.close(primary)
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        code = proc.wait(timeout=timeout)
    return Done(code, stdout.decode(), terminal.decode())


@contextlib.contextmanager
def _running(args: tuple[str, ...], env: Mapping[str, str] | None) -> Iterator[Pipes]:
    """``ssegate ARGS`` started with stdout and stderr on pipes (stdin empty)."""
    with subprocess.Popen(
        [str(SSEGATE), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env_for(env),
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        yield Pipes(proc, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class Pipes:
    proc: subprocess.Popen[bytes]
    stdout: IO[bytes]
    stderr: IO[bytes]


def interrupt_after(expected: bytes, *args: str, env: Mapping[str, str] | None = None) -> Done:
    """Run ``ssegate ARGS``, press Ctrl-C (SIGINT) once stdout has shown ``expected``."""
    with _running(args, env) as run:
        seen = b""
        while not seen.endswith(expected):
            byte = run.stdout.read(1)
            assert byte, f"stdout ended before {expected!r}: {seen!r}"
            seen += byte
        run.proc.send_signal(signal.SIGINT)
        rest = run.stdout.read()
        stderr = run.stderr.read()
        code = run.proc.wait(timeout=60)
    return Done(code, (seen + rest).decode(), stderr.decode())


def head_1(*args: str, env: Mapping[str, str] | None = None) -> tuple[bytes, Done]:
    """``ssegate ARGS | head -1``: read one line, close the pipe; the line, and how it ended.

    The command must write more than a pipe holds (64 kB) after that line, so
    that it meets the closed pipe however fast it runs.
    """
    with _running(args, env) as run:
        line = run.stdout.readline()
        run.stdout.close()
        stderr = run.stderr.read()
        code = run.proc.wait(timeout=60)
    return line, Done(code, "", stderr.decode())
