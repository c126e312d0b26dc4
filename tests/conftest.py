"""Fixtures shared by the whole suite. Areas keep their own in tests/<area>/conftest.py."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator

import pytest
import redis

from ssegate.testing._redis import LocalRedisCluster
from ssegate.testing._redis import redis_url as find_redis

# A shell starts a background job (`make test &`, a CI runner) with SIGINT
# ignored, and every process it starts inherits that: the tests that press
# Ctrl-C on an `ssegate` process would wait forever. Handled here, a child
# starts with the default again (exec resets handled signals, not ignored ones).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (what uvicorn serves on); modules may parametrize trio too."""
    return "asyncio"


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


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A Redis Cluster of three masters of the session's own (``redis+cluster://``)."""
    with LocalRedisCluster() as cluster:
        yield cluster.url
