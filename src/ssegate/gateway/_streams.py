"""``/v1/streams``: start a generation, follow it (in any format, resuming), stop it.

``POST`` answers ``{id, events_url}`` at once; the generation runs whether or
not anybody reads it, for the detach grace period at least. ``GET`` follows it
(a browser's ``EventSource`` works as is: ``?access_token=`` for the key);
``DELETE`` stops it upstream at once.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from .._exceptions import StoreUnavailable
from ._auth import Principal
from ._begin import STREAM_ID, ChatCompletionBody, begin
from ._errors import store_unavailable, stream_not_found
from ._gateway import Gateway, gateway, principal
from ._reading import serve_generation

__all__ = ["router"]

router = APIRouter(tags=["streams"])


def _known(stream: str) -> str:
    if not STREAM_ID.match(stream):
        raise stream_not_found(stream)
    return stream


@router.post("/v1/streams", status_code=201, summary="Start a generation; follow it by GET")
async def start_stream(
    body: ChatCompletionBody,
    gw: Annotated[Gateway, Depends(gateway)],
    who: Annotated[Principal, Depends(principal)],
) -> JSONResponse:
    started = await begin(gw, who, body)
    url = f"/v1/streams/{started.stream}"
    return JSONResponse({"id": started.stream, "events_url": url}, 201, headers={"Location": url})


@router.get(
    "/v1/streams/{stream}",
    summary="Follow a generation (SSE), resuming after Last-Event-ID",
    response_model=None,
)
async def follow_stream(
    stream: str,
    request: Request,
    gw: Annotated[Gateway, Depends(gateway)],
    who: Annotated[Principal, Depends(principal)],
    format: Annotated[Literal["native", "openai", "aisdk"], Query()] = "native",
    include_usage: Annotated[bool, Query()] = False,
    last_event_id: Annotated[str | None, Query(description="when no header")] = None,
) -> Response:
    gw.auth.require(who, "chat")
    return await serve_generation(
        gw, _known(stream), request, format=format, include_usage=include_usage
    )


@router.delete("/v1/streams/{stream}", status_code=204, summary="Stop a generation")
async def stop_stream(
    stream: str,
    gw: Annotated[Gateway, Depends(gateway)],
    who: Annotated[Principal, Depends(principal)],
) -> Response:
    gw.auth.require(who, "chat")
    try:
        info = await gw.store.info(_known(stream))
    except StoreUnavailable:
        raise store_unavailable() from None
    if not info.exists:
        raise stream_not_found(stream)
    await gw.runner.stop(stream)
    return Response(status_code=204)
