"""Errors in OpenAI's shape, and the handlers that keep every answer one of them.

``{"error": {"message", "type", "code", "param"}}`` with the right status: what
the ``openai`` SDK turns into ``AuthenticationError``, ``NotFoundError``,
``RateLimitError``... Validation errors (malformed JSON, wrong fields) are 422
naming the field in ``param``; anything unexpected is a 500 with a generic
message (the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

__all__ = [
    "ApiError",
    "api_error",
    "install_error_handlers",
    "store_unavailable",
    "stream_not_found",
]

log = logging.getLogger("ssegate.gateway")

#: OpenAI's error ``type`` for each status.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """Raised by routes and dependencies; answered as ``api_error(...)``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})


def store_unavailable() -> ApiError:
    """The stream store (Redis) cannot be reached: 503, try again in a second."""
    return ApiError(
        503,
        "The stream store is unavailable.",
        code="store_unavailable",
        headers={"Retry-After": "1"},
    )


def stream_not_found(stream: str) -> ApiError:
    # A client's garbage is quoted back, but no more than a line of it.
    shown = repr(stream) if len(stream) <= 64 else f"{stream[:48]!r}... ({len(stream)} characters)"
    return ApiError(404, f"No stream {shown} (or it has expired).", code="stream_not_found")


def api_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An OpenAI-shaped error answer."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "code": code, "param": param}}
    return JSONResponse(body, status, headers=dict(headers or {}))


# The member tags pydantic adds to the location of a union's errors ("stop.str").
_UNION_TAG = re.compile(r"(str|int|float|bool|dict|list|none|function-\w+)(\[.*\])?\Z")


def _field(loc: tuple[Any, ...]) -> str | None:
    """``("body", "messages", 0, "role")`` -> ``"messages[0].role"``."""
    out = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _UNION_TAG.match(str(part)):
            out += f".{part}" if out else str(part)
    return out or None


async def _unauthenticated(request: Request) -> Response | None:
    """The 401 of a request without a valid key, if it has none.

    FastAPI reads the body before the dependencies run: a request without a
    valid key must hear that, not what is wrong with its input.
    """
    authenticate = getattr(request.app.state, "authenticate", None)
    if authenticate is not None:
        try:
            await authenticate(request)
        except ApiError as refused:
            return await _api(request, refused)
    return None


#: What FastAPI says of a body it cannot decode (bytes that are not UTF-8).
_UNPARSED = "There was an error parsing the body"


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    refused = await _unauthenticated(request)
    if refused is not None:
        return refused
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return api_error(422, "The request body is not valid JSON.", code="invalid_json")
    param = _field(tuple(first.get("loc", ())))
    said = str(first["msg"]).removeprefix("Value error, ")  # pydantic's prefix for validators
    message = f"{param}: {said}" if param else said
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return api_error(422, message, code="invalid_value", param=param)


async def _api(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return api_error(exc.status, exc.message, code=exc.code, param=exc.param, headers=exc.headers)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSED:
        refused = await _unauthenticated(request)
        if refused is not None:
            return refused
        return api_error(422, "The request body is not valid JSON.", code="invalid_json")
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    return api_error(exc.status_code, message, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return api_error(500, "The gateway failed to answer this request.", code="internal_error")


def install_error_handlers(
    app: FastAPI, authenticate: Callable[[Request], Awaitable[Any]] | None = None
) -> None:
    """Every error in OpenAI's shape; ``authenticate(request)`` (raising ``ApiError``)
    is asked first when the input is invalid."""
    app.state.authenticate = authenticate
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
