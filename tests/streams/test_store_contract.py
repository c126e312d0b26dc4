"""Both stores pass the one contract suite."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streams_support import FakeClock

from ssegate.streams import MemoryStore
from ssegate.streams.redis import RedisStore
from ssegate.testing import check_stream_store

pytestmark = pytest.mark.anyio


async def test_memory_store_passes_the_contract(clock: FakeClock) -> None:
    await check_stream_store(lambda **kw: MemoryStore(clock=clock, **kw), advance=clock.advance)


async def test_memory_store_passes_the_contract_in_real_time() -> None:
    await check_stream_store(MemoryStore)


@pytest.mark.redis
async def test_redis_store_passes_the_contract(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    await check_stream_store(redis_store_factory)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_memory_store_passes_the_contract_on_trio(clock: FakeClock) -> None:
    await check_stream_store(lambda **kw: MemoryStore(clock=clock, **kw), advance=clock.advance)
