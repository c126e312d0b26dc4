"""``GET /v1/dashboard/events``: the operator's live view, as an event stream.

Every ``interval`` seconds (1 by default) one ``snapshot`` event: generations
running and readers connected now, and per model the last minute's tokens per
second (with a per-second series for charts), time to first token and
inter-token latency percentiles (``_stats.LiveStats``). The first snapshot goes
out at once. Snapshots are not kept: no ids, nothing to resume; a reconnecting
reader simply gets the current one. Needs the ``ops`` scope when auth is on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from ..protocol import Event
from ..server import EventSourceResponse
from ._auth import Principal
from ._gateway import Gateway, gateway, principal

__all__ = ["router"]

router = APIRouter(tags=["operations"])

_NO_STORE = {"Cache-Control": "no-store"}


@router.get(
    "/v1/dashboard/events",
    summary="The gateway's live figures (SSE): a snapshot every interval seconds",
    response_model=None,
)
async def dashboard_events(
    gw: Annotated[Gateway, Depends(gateway)],
    who: Annotated[Principal, Depends(principal)],
    interval: Annotated[float, Query(ge=0.2, le=60, description="seconds between snapshots")] = 1.0,
) -> Response:
    gw.auth.require(who, "ops")

    async def snapshots() -> AsyncIterator[Event]:
        while True:
            figures = snapshot(gw)
            figures["interval_s"] = interval
            yield Event(json.dumps(figures, separators=(",", ":")), event="snapshot")
            await anyio.sleep(interval)

    return EventSourceResponse(snapshots(), ping=None, headers=_NO_STORE, retry=2000)


def snapshot(gw: Gateway) -> dict[str, Any]:
    """The figures of ``gw`` now (what one ``snapshot`` event carries)."""
    runner = gw.runner
    return gw.metrics.live.snapshot(runner.now(), runner.by_model())
