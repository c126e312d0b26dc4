"""Scripted servers (real uvicorn on 127.0.0.1) for the whole client suite.

``script`` registers scripts on the main one; ``elsewhere`` on a second one,
same host but another port, so another origin (for credentials' tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from client_scripts import Script, ScriptedApp, Step

from ssegate.testing import serve

Server = tuple[ScriptedApp, str]
MakeScript = Callable[[list[Step]], Script]


def _serve_scripts() -> Iterator[Server]:
    app = ScriptedApp()
    with serve(app) as server:
        yield app, server.url


def _maker(server: Server) -> MakeScript:
    """``make([step, ...])`` registers a fresh script; its ``url`` serves it."""
    app, url = server

    def make(steps: list[Step]) -> Script:
        return app.script(steps, url)

    return make


@pytest.fixture(scope="session")
def scripted_server() -> Iterator[Server]:
    yield from _serve_scripts()


@pytest.fixture(scope="session")
def other_server() -> Iterator[Server]:
    yield from _serve_scripts()


@pytest.fixture
def script(scripted_server: Server) -> MakeScript:
    return _maker(scripted_server)


@pytest.fixture
def elsewhere(other_server: Server) -> MakeScript:
    return _maker(other_server)
