"""Both stores pass the one contract suite."""

from __future__ import annotations

import uuid
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


@pytest.mark.redis
async def test_redis_store_passes_the_contract_on_a_cluster(redis_cluster_url: str) -> None:
    # every script and pipeline keeps to one hash slot (else Redis answers CROSSSLOT),
    # and the hub's reads span the three masters
    await check_stream_store(
        lambda **kw: RedisStore(redis_cluster_url, prefix=f"c{uuid.uuid4().hex[:8]}:", **kw)
    )


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_memory_store_passes_the_contract_on_trio(clock: FakeClock) -> None:
    await check_stream_store(lambda **kw: MemoryStore(clock=clock, **kw), advance=clock.advance)
