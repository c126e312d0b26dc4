"""The ``ssegate`` command line: one module per command, registered on one app."""

from __future__ import annotations

from . import (
    _chat,  # noqa: F401
    _listen,  # noqa: F401
    _publish,  # noqa: F401
    _serve,  # noqa: F401
)
from ._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``ssegate`` console script."""
    app()
