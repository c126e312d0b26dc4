"""The ``ssegate`` command's typer application; each command lives in its own module."""

from __future__ import annotations

from .._extras import require

require("gateway", "the ssegate command")

import typer  # noqa: E402

app = typer.Typer(
    name="ssegate",
    help="Server-Sent Events done right: listen to streams, chat with models, serve the gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"ssegate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Server-Sent Events done right: listen to streams, chat with models, serve the gateway."""
