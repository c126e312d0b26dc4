"""Fixtures for the stream tests: a real Redis, unique key prefixes, a fake clock."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from streams_support import FakeClock

from ssegate.streams.redis import RedisStore
from ssegate.testing._redis import redis_url as find_redis


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``$REDIS_URL``, or 127.0.0.1:6379 if it answers, or a redis-server of our own."""
    with find_redis() as url:
        yield url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test (or parallel run) uses; its keys are deleted afterwards."""
    prefix = f"ssegate-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_store_factory(redis_url: str, redis_prefix: str) -> Callable[..., RedisStore]:
    """``factory(**options)``: a new RedisStore with a fresh prefix under this test's prefix."""

    def factory(**options: object) -> RedisStore:
        prefix = f"{redis_prefix}{uuid.uuid4().hex[:8]}:"
        return RedisStore(redis_url, prefix=prefix, **options)  # type: ignore[arg-type]

    return factory
