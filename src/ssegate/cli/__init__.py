"""The ``ssegate`` command line: one module per command, registered on one app.

It comes with the ``gateway`` extra; without it, ``ssegate`` says which extra
to install instead of showing a traceback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from .._extras import MissingExtra, require

if TYPE_CHECKING:
    from typer import Typer

    app: Typer

__all__ = ["app", "main"]


def _load() -> Any:
    require("gateway", "the ssegate command")  # before any command imports typer
    from . import (
        _chat,  # noqa: F401
        _listen,  # noqa: F401
        _model,  # noqa: F401
        _publish,  # noqa: F401
        _serve,  # noqa: F401
    )
    from ._app import app

    return app


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(f"module 'ssegate.cli' has no attribute {name!r}")
    value = _load()
    globals()["app"] = value
    return value


def main() -> None:
    """Entry point of the ``ssegate`` console script."""
    try:
        command = _load()
    except MissingExtra as exc:
        sys.stderr.write(f"ssegate: {exc}\n")
        raise SystemExit(1) from None
    command()
