"""``/v1/topics/{topic}``: publish to a topic, subscribe to it (history, then live).

A topic is a stream that never ends, kept to the retention limit. Subscribers
resume after ``Last-Event-ID``; one whose id is older than what is kept gets a
``gap`` event saying how many events it missed, never a silent skip. Topic
names are paths (``prices/eurusd``), which ``subscribe:<pattern>`` scopes match.

A topic is kept until the process (memory store) or Redis forgets it, so the
topics one key may create are counted (``_quota.TopicQuota``): past
``limits.max_topics_per_key`` a publish to a new topic is a 429; publishing to
topics that exist is never refused.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._exceptions import StoreUnavailable
from ..protocol import Event
from ..server import EventSourceResponse
from ..streams import last_event_id, stream_response
from ._auth import Principal
from ._errors import ApiError, store_unavailable
from ._gateway import Gateway, gateway, principal
from ._once import Published, Reused, publish_once
from ._reading import FAREWELL, Reader, openai_error

__all__ = ["router"]

router = APIRouter(tags=["topics"])

#: The ``retry:`` a subscription starts with: a browser's ``EventSource`` (what
#: topics are read with) reconnects after 1 s instead of its default 3 s.
RECONNECT_MS = 1000

_TOPIC = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/@+=-]{0,150}\Z")
_EVENT = re.compile(r"[^\x00-\x1f\x7f]{1,64}\Z")  # no CR, LF, NUL or other controls

TopicName = Annotated[str, Path(description="e.g. prices/eurusd")]


def _stream(topic: str) -> str:
    # Segments that are empty, "." or ".." are refused: a name is the same string
    # to the gateway, to a proxy that normalises paths, and to a scope's pattern.
    if not _TOPIC.match(topic) or {"", ".", ".."} & set(topic.split("/")):
        raise ApiError(
            422,
            "topic: 1-151 characters of letters, digits and _ . : / @ + = -, "
            "not starting with punctuation, with no empty, '.' or '..' segment",
            code="invalid_topic",
            param="topic",
        )
    return "topic:" + topic


class Publish(BaseModel):
    """One event for a topic's subscribers."""

    model_config = ConfigDict(extra="forbid")

    event: str = Field(default="message", description="the SSE event type")
    data: Any = Field(description="a string (sent as is) or any JSON value (sent as JSON)")
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[!-~]+$",
        description="an idempotency key (1-128 visible ASCII characters, e.g. a UUID): a "
        "publish re-sent with the same id is appended once, and answered with the id the "
        "store gave the event (what subscribers resume after) and duplicate=true",
    )

    @field_validator("event")
    @classmethod
    def _event(cls, value: str) -> str:
        if not _EVENT.match(value):
            raise ValueError("1-64 characters without CR, LF, NUL or other control characters")
        return value


@router.post("/v1/topics/{topic:path}", summary="Publish an event to a topic")
async def publish(
    topic: TopicName,
    body: Publish,
    gw: Annotated[Gateway, Depends(gateway)],
    who: Annotated[Principal, Depends(principal)],
) -> JSONResponse:
    gw.auth.require(who, "publish")
    stream = _stream(topic)
    data = body.data if isinstance(body.data, str) else json.dumps(body.data)
    event = Event(data, event=body.event)
    try:
        await gw.topics.admit(gw.store, who, topic, stream)
        if body.id is None:
            published = Published(await gw.store.append(stream, event), duplicate=False)
        else:
            published = await publish_once(
                gw.store, stream, event, body.id, wait=gw.settings.lease_ttl
            )
    except StoreUnavailable:
        raise store_unavailable() from None
    except Reused as exc:
        raise ApiError(409, str(exc), code="id_reused", param="id") from None
    return JSONResponse({"topic": topic, "id": published.id, "duplicate": published.duplicate})


@router.get(
    "/v1/topics/{topic:path}",
    summary="Subscribe to a topic (SSE): history after Last-Event-ID, then live",
    response_model=None,
)
async def subscribe(
    topic: TopicName,
    request: Request,
    gw: Annotated[Gateway, Depends(gateway)],
    who: Annotated[Principal, Depends(principal)],
) -> Response:
    gw.auth.require(who, f"subscribe:{topic}")
    stream = _stream(topic)
    if last_event_id(request):
        gw.metrics.resumes.inc()
    response = await stream_response(
        gw.hub,
        stream,
        request,
        missing_ok=True,
        ping=gw.settings.keep_alive,
        send_timeout=gw.settings.send_timeout,
        farewell=FAREWELL,
        retry=RECONNECT_MS,
    )
    if not isinstance(response, EventSourceResponse):
        return openai_error(response)
    return Reader(response, gw)
