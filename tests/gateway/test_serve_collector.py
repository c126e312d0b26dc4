"""``ssegate serve``'s collector tuning, run through the app's real lifespan."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from starlette.applications import Starlette

from ssegate.cli._serve import GC_THRESHOLDS, tuned_for_serving

PACING = "ssegate: paced collections"


@pytest.fixture
def restored_collector() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def pacing_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == PACING]


def test_serving_freezes_tunes_and_paces_until_shutdown(restored_collector: None) -> None:
    started: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append("app")
        yield
        started.append("app ended")

    async def run() -> None:
        app = tuned_for_serving(Starlette(lifespan=lifespan))
        assert pacing_tasks() == []
        async with app.router.lifespan_context(app):
            assert started == ["app"]
            assert gc.get_threshold() == GC_THRESHOLDS
            assert gc.get_freeze_count() > 1_000
            (pacing,) = pacing_tasks()
            await asyncio.sleep(0)
            assert not pacing.done()
        assert started == ["app", "app ended"]
        await asyncio.sleep(0)
        assert pacing.cancelled()
        assert pacing_tasks() == []

    asyncio.run(run())
