"""Fixtures of the fault tests: gateways in this process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from faults_support import Gateway

from ssegate.gateway import LocalSettings, Settings, create_app
from ssegate.testing import serve


@pytest.fixture
def gateway() -> Gateway:
    """``with gateway(**settings) as url:`` a gateway on 127.0.0.1 (auth off,
    memory store, echo unpaced unless said otherwise), stopped after."""

    @contextmanager
    def run(**values: Any) -> Iterator[str]:
        values.setdefault("default_model", "echo")
        values.setdefault("echo_tokens_per_second", 0.0)
        values.setdefault("local", LocalSettings(preload=False))
        with serve(create_app(Settings.model_validate(values))) as server:
            yield server.url

    return run
