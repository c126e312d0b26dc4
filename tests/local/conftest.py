"""Fixtures of the local engine's tests: the real model, loaded once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from local_support import write_tiny_llama

from ssegate.local import LocalEngine, default_model_path


@pytest.fixture(scope="session")
def model_path() -> str:
    """The embedded SmolLM2-135M-Instruct GGUF (``make setup`` installs it)."""
    return default_model_path()


@pytest.fixture(scope="session")
def engine(model_path: str) -> Iterator[LocalEngine]:
    """The real engine, loaded once (2 s, 540 MB) and shared by every test."""
    with LocalEngine.load(model_path, n_ctx=512, max_concurrency=2) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random llama GGUF using Q4_0, Q4_1, Q8_0, F16, F32 and an untied head."""
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
