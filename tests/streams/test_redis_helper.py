"""ssegate.testing._redis: find a Redis, or start a real one."""

from __future__ import annotations

import pytest
from streams_support import needs_redis_server

from ssegate.testing import _redis
from ssegate.testing._redis import RedisServer, ping_redis, redis_url

pytestmark = pytest.mark.redis


def test_redis_url_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example.invalid:1/2")
    with redis_url() as url:
        assert url == "redis://example.invalid:1/2"


@needs_redis_server
def test_redis_url_starts_a_server_when_none_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    real_ping = _redis.ping_redis
    monkeypatch.setattr(
        _redis,
        "ping_redis",
        lambda host="127.0.0.1", port=6379, timeout=1.0: (
            port != 6379 and real_ping(host, port, timeout)
        ),
    )
    with redis_url() as url:
        assert url.startswith("redis://127.0.0.1:")
        assert not url.endswith(":6379/0")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert real_ping("127.0.0.1", port)
    assert not real_ping("127.0.0.1", port)  # stopped at the end


@needs_redis_server
def test_a_server_of_our_own_stops_and_restarts_on_the_same_port() -> None:
    with RedisServer() as server:
        assert server.running
        assert ping_redis(port=server.port)
        server.stop()
        assert not server.running
        assert not ping_redis(port=server.port)
        server.restart()
        assert ping_redis(port=server.port)
        with pytest.raises(RuntimeError, match="already running"):
            server.start()


def test_no_redis_server_on_path_says_how_to_install_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match="apt-get install redis-server"):
        RedisServer()
