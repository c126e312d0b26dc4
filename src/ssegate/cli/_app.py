"""The ``ssegate`` command's typer application; each command lives in its own module."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="ssegate",
    help="Server-Sent Events done right: listen to streams, chat with models, serve the gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Server-Sent Events done right: listen to streams, chat with models, serve the gateway."""
