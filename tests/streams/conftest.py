"""Fixtures for the stream tests: Redis stores under the test's key prefix, a fake clock.

``redis_url`` and ``redis_prefix`` are the suite's (tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from streams_support import FakeClock

from ssegate.streams.redis import RedisStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_store_factory(redis_url: str, redis_prefix: str) -> Callable[..., RedisStore]:
    """``factory(**options)``: a new RedisStore with a fresh prefix under this test's prefix."""

    def factory(**options: object) -> RedisStore:
        prefix = f"{redis_prefix}{uuid.uuid4().hex[:8]}:"
        return RedisStore(redis_url, prefix=prefix, **options)  # type: ignore[arg-type]

    return factory
