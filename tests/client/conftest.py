"""One scripted server (a real uvicorn on 127.0.0.1) for the whole client suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from client_scripts import Script, ScriptedApp, Step

from ssegate.testing import serve


@pytest.fixture(scope="session")
def scripted_server() -> Iterator[tuple[ScriptedApp, str]]:
    app = ScriptedApp()
    with serve(app) as server:
        yield app, server.url


@pytest.fixture
def script(scripted_server: tuple[ScriptedApp, str]) -> Callable[[list[Step]], Script]:
    """``script([step, ...])`` registers a fresh script; its ``url`` serves it."""
    app, url = scripted_server

    def make(steps: list[Step]) -> Script:
        return app.script(steps, url)

    return make
