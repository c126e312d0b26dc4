"""Fixtures shared by the whole suite. Areas keep their own in tests/<area>/conftest.py."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (what uvicorn serves on); modules may parametrize trio too."""
    return "asyncio"
