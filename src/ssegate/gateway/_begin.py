"""Starting a generation from a client's chat request (shared by chat and streams routes).

The body is OpenAI's chat-completions request. Everything that can be refused
is refused here, before a generation starts and before the first byte: fields
(422 naming the field), the model (404 listing the models), the key's scope
(403) and its concurrent generations (429 with ``Retry-After``).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .._entropy import random_hex
from .._exceptions import (
    AuthenticationError,
    BadRequestError,
    ProviderError,
    RateLimitError,
    StoreUnavailable,
)
from ..llm import ChatRequest
from ._auth import Principal
from ._errors import ApiError, store_unavailable
from ._gateway import Gateway
from ._models import Route, UnknownModel
from ._runner import Generation

__all__ = [
    "STREAM_ID",
    "ChatCompletionBody",
    "Started",
    "begin",
    "refusal",
]

#: The ids of generation streams: unguessable, and never a topic's name.
STREAM_ID = re.compile(r"gen_[0-9a-f]{32}\Z")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool = False


class ChatCompletionBody(BaseModel):
    """OpenAI's chat-completions request; fields not named here (``stop``, ``seed``,
    ...) are checked by ``ChatRequest.from_openai`` or go to the provider."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, description="local, echo, an alias or provider/model")
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0)
    tools: list[dict[str, Any]] | None = None


class Started:
    """A generation just started for a request."""

    __slots__ = ("chat", "generation", "route", "stream")

    def __init__(self, stream: str, route: Route, chat: ChatRequest, generation: Generation):
        self.stream = stream
        self.route = route
        self.chat = chat
        self.generation = generation


#: The body's own fields, in order, as ``openai_fields`` gives them.
_BODY_FIELDS = tuple(name for name in ChatCompletionBody.model_fields if name != "stream")


def openai_fields(body: ChatCompletionBody) -> dict[str, Any]:
    """The fields the client sent but ``stream``, as OpenAI's body (what
    ``model_dump(exclude_unset=True, exclude={"stream"})`` gives, in its order,
    without pydantic's serializer: a stream start's cost otherwise)."""
    sent = body.model_fields_set
    fields = {name: getattr(body, name) for name in _BODY_FIELDS if name in sent}
    if body.stream_options is not None:
        fields["stream_options"] = body.stream_options.model_dump()
    if body.model_extra:
        fields.update(body.model_extra)
    return fields


def _chat_request(body: ChatCompletionBody) -> ChatRequest:
    fields = openai_fields(body)
    try:
        return ChatRequest.from_openai(fields)
    except ValueError as exc:
        raise ApiError(422, str(exc), code="invalid_value", param=_param(str(exc))) from None


# ChatRequest's messages start with the field they are about: "'model' must
# be...", "messages[0].role must be...", "messages[1]: only text...".
_PARAM = re.compile(r"'?([a-z_]+)((?:\[\d+\])?(?:\.[a-z_]+)*)'?[ :]")
_FIELDS = frozenset(
    {
        "model",
        "messages",
        "tools",
        "stop",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "stream_options",
    }
)


def _param(message: str) -> str | None:
    found = _PARAM.match(message)
    if found is None or found.group(1) not in _FIELDS:
        return None
    return found.group(1) + found.group(2)


async def begin(gateway: Gateway, who: Principal, body: ChatCompletionBody) -> Started:
    """Check ``body`` and start its generation (the caller reads or hands out its stream)."""
    gateway.auth.require(who, "chat")
    chat = _chat_request(body)
    try:
        route = gateway.models.route(chat.model)
    except UnknownModel:
        names = ", ".join(gateway.models.names())
        raise ApiError(
            404,
            f"The model {chat.model!r} does not exist here; available: {names} "
            "(and <provider>/<model> for each configured provider).",
            code="model_not_found",
            param="model",
        ) from None
    limit = gateway.settings.limits.max_streams_per_key
    runner = gateway.runner
    if runner.running(who.bucket) >= limit:
        whose = "This key runs" if who.bucket == who.key_id else "This client address runs"
        raise ApiError(
            429,
            f"{whose} {limit} generations already; wait for one to finish.",
            code="too_many_streams",
            headers={"Retry-After": "1"},
        )
    # secrets.token_hex(16): os.urandom's bytes, a system call per 256 ids (_entropy).
    stream = "gen_" + random_hex(16)
    try:
        generation = await runner.start(stream, route, chat, key_id=who.key_id, bucket=who.bucket)
    except StoreUnavailable:
        raise store_unavailable() from None
    return Started(stream, route, chat, generation)


def refusal(exc: ProviderError) -> ApiError:
    """The client's answer when the provider refused before its first event.

    The upstream's own credentials failing is the gateway's problem, not the
    client's: 502, never a 401 that would send the client looking at its key.
    """
    code = exc.code or "upstream_error"
    message = f"The provider refused: {exc}"
    if isinstance(exc, RateLimitError):
        retry = max(1, round(exc.retry_after)) if exc.retry_after else 1
        return ApiError(429, message, code=code, headers={"Retry-After": str(retry)})
    if isinstance(exc, BadRequestError):
        status = exc.status if exc.status in (400, 404, 413, 422) else 400
        return ApiError(status, message, code=code)
    if isinstance(exc, AuthenticationError):
        return ApiError(502, message, code=code)
    status = 503 if exc.code in ("overloaded", "model_load_failed", "model_not_found") else 502
    return ApiError(status, message, code=code, headers={"Retry-After": "1"})
