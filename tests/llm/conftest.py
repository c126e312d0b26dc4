"""Fixtures of the LLM tests (helpers live in llm_support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from llm_support import Upstream

from ssegate.llm.providers import HTTPClient, default_http_client
from ssegate.testing import FakeUpstream


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    """One fake upstream server (real uvicorn on 127.0.0.1) shared by the LLM tests."""
    fake = FakeUpstream()
    with fake.run() as url:
        yield Upstream(fake, url)


@pytest.fixture(params=["aiohttp", "httpx"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[HTTPClient | httpx.AsyncClient]:
    """Each over-HTTP test runs on both clients the driver supports."""
    if request.param == "aiohttp":
        aio = HTTPClient()
        yield aio
        await aio.aclose()
    else:
        async with default_http_client() as http:
            yield http
