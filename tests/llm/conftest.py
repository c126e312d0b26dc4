"""Fixtures of the LLM tests (helpers live in llm_support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from llm_support import Upstream

from ssegate.llm._wire import WireClient
from ssegate.llm.providers import default_http_client
from ssegate.testing import FakeUpstream


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    """One fake upstream server (real uvicorn on 127.0.0.1) shared by the LLM tests."""
    fake = FakeUpstream()
    with fake.run() as url:
        yield Upstream(fake, url)


@pytest.fixture(params=["wire", "httpx"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[WireClient | httpx.AsyncClient]:
    """Each over-HTTP test runs on both clients the driver supports."""
    if request.param == "wire":
        wire = WireClient()
        yield wire
        await wire.aclose()
    else:
        async with default_http_client() as http:
            yield http
