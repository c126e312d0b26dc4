"""Fixtures of the gateway tests: real uvicorn servers on 127.0.0.1 running create_app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from gateway_support import settings

from ssegate.gateway import create_app
from ssegate.testing import UvicornThread, serve

Serve = Callable[..., AbstractContextManager[UvicornThread]]


@pytest.fixture
def gateway() -> Serve:
    """``with gateway(**settings) as server:`` a gateway on 127.0.0.1 (stopped after)."""

    @contextmanager
    def run(
        app_options: dict[str, Any] | None = None,
        uvicorn: dict[str, Any] | None = None,
        **values: Any,
    ) -> Iterator[UvicornThread]:
        app = create_app(settings(**values), **(app_options or {}))
        with serve(app, **(uvicorn or {})) as server:
            yield server

    return run


@pytest.fixture
def echo_url(gateway: Serve) -> Iterator[str]:
    """A default gateway's base URL (auth off, memory store, echo unpaced)."""
    with gateway() as server:
        yield server.url
