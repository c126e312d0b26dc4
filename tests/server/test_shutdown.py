"""Shutdown and GracefulShutdown, without a server: signals, lifespan, scope."""

from __future__ import annotations

import signal
import threading
from collections.abc import MutableMapping
from types import FrameType
from typing import Any

import anyio
import pytest

from ssegate.server import GracefulShutdown, Shutdown

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


async def test_subscribers_are_called_on_their_loop_once_set() -> None:
    shutdown = Shutdown()
    called = anyio.Event()
    unsubscribe = shutdown.subscribe(called.set)
    assert not shutdown.is_set
    # from another thread, as a signal handler or a test would
    await anyio.to_thread.run_sync(shutdown.set)
    with anyio.fail_after(10):
        await called.wait()
    assert shutdown.is_set
    unsubscribe()


async def test_subscribing_after_set_calls_back_at_once() -> None:
    shutdown = Shutdown()
    shutdown.set()
    called = anyio.Event()
    shutdown.subscribe(called.set)
    with anyio.fail_after(10):
        await called.wait()


async def test_unsubscribed_callbacks_are_not_called() -> None:
    shutdown = Shutdown()
    calls: list[str] = []
    unsubscribe = shutdown.subscribe(lambda: calls.append("a"))
    unsubscribe()
    done = anyio.Event()
    shutdown.subscribe(done.set)
    shutdown.set()
    with anyio.fail_after(10):
        await done.wait()
    assert calls == []


def test_signal_handlers_chain_to_the_previous_one() -> None:
    shutdown = Shutdown()
    seen: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    old = signal.signal(signal.SIGUSR1, previous)
    try:
        with shutdown.signals([signal.SIGUSR1]) as installed:
            assert installed
            signal.raise_signal(signal.SIGUSR1)
            assert shutdown.is_set
            assert seen == [signal.SIGUSR1]
        assert signal.getsignal(signal.SIGUSR1) is previous  # restored
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_signal_handlers_need_the_main_thread() -> None:
    shutdown = Shutdown()
    result: list[bool] = []

    def other_thread() -> None:
        with shutdown.signals([signal.SIGUSR1]) as installed:
            result.append(installed)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(10)
    assert result == [False]


async def test_middleware_shares_its_shutdown_and_sets_it_on_lifespan_shutdown() -> None:
    scopes: list[MutableMapping[str, Any]] = []
    sent: list[MutableMapping[str, Any]] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    middleware = GracefulShutdown(app)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> MutableMapping[str, Any]:
        return next(messages)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await middleware({"type": "http"}, receive, send)
    assert scopes[0]["ssegate.shutdown"] is middleware.shutdown
    assert not middleware.shutdown.is_set
    await middleware({"type": "lifespan"}, receive, send)
    assert middleware.shutdown.is_set
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
