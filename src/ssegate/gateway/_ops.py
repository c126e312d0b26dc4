"""Operations: ``/healthz`` (the process answers), ``/readyz`` (it can serve),
``/metrics`` (Prometheus text format, this gateway's registry only).

``/healthz`` answers from the first moment, while the local model still loads;
``/readyz`` turns 200 once the store answers and the default model is loaded,
and says what it waits for until then (503).
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .._exceptions import StoreUnavailable
from ._gateway import Gateway, gateway

__all__ = ["router"]

router = APIRouter(tags=["operations"])

#: How long /readyz waits for the store before calling it unreachable.
STORE_CHECK_S = 2.0


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The store answers and the default model is loaded")
async def readyz(gw: Annotated[Gateway, Depends(gateway)]) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        with anyio.fail_after(STORE_CHECK_S):
            await gw.store.info("ssegate-readyz")
        checks["store"] = "ok"
    except (StoreUnavailable, TimeoutError):
        checks["store"] = "unreachable"
    default = gw.settings.default_model
    if gw.models.ready(default):
        checks["default_model"] = "ok"
    elif gw.models.local_error is not None:
        checks["default_model"] = f"failed: {gw.models.local_error}"
    else:
        checks["default_model"] = "loading"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(gw: Annotated[Gateway, Depends(gateway)]) -> Response:
    return Response(gw.metrics.export(), media_type=CONTENT_TYPE_LATEST)
