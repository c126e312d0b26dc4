"""LLM providers: the interface every one implements, and a factory by name.

The interface
-------------
A provider is any object with::

    name: str
    def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]
    async def aclose(self) -> None

``stream`` is an async generator of unified events (``ssegate.llm``): ``Start``
first, then content, then exactly one ``Finish`` or ``Error``. Failures *before*
the first event raise a ``ProviderError`` subclass (``AuthenticationError``,
``RateLimitError``, ``BadRequestError``, ``UpstreamUnavailable``) with ``status``,
``retryable`` and ``retry_after``; failures after it are the ``Error`` event.
Consumers iterate under ``contextlib.aclosing(provider.stream(request))`` (or
run it in a task they may cancel), so stopping early releases the upstream at
once. Relays should prefer ``stream_batches(provider, request)`` (below): the
same events in lists, one per upstream read, to write with one ``send`` each.

HTTP providers (``openai``, ``ollama``, ``anthropic``) subclass ``HTTPProvider``:
they write two pure methods, ``build_request(request) -> HTTPRequest`` and
``parser(request) -> FrameParser``, plus ``error_from_response``, and inherit
``stream``/``stream_batches`` from the shared driver (``ssegate.llm._drive``),
which runs over aiohttp (``HTTPClient``) by default, or over an
``httpx.AsyncClient`` passed as ``client=`` (and always on trio).

An in-process engine (the embedded ``local`` model) implements ``stream``
directly, without HTTP: an ``async def stream(request)`` generator that yields
``Start(model=..., provider="local")``, then ``TextDelta``/``Usage`` as tokens
come, then ``Finish("stop" | "length")``, and ``Error(...)`` if the engine
fails. It must stop work promptly when the generator is closed or its task
cancelled (check between tokens; run blocking compute in a worker thread).
The name ``local`` is registered below as ``ssegate.llm.providers.local.LocalProvider``,
imported lazily when first asked for (keyword options go to its constructor).

The factory
-----------
``create_provider("deepseek", api_key=...)`` builds a provider by name with the
vendor's defaults (base URL, quirks); keyword options go to its constructor.
"""

from __future__ import annotations

import importlib.util
import json
import os
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from importlib import import_module
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..._exceptions import AuthenticationError, ProviderError
from .._client import HTTPClient, _origin, default_http_client
from .._drive import (
    FrameParser,
    HTTPRequest,
    _Adapter,
    drive,
    drive_batches,
    drive_into,
    provider_error,
)
from .._events import LLMEvent
from .._request import ChatRequest

__all__ = [
    "PROVIDERS",
    "HTTPClient",
    "HTTPProvider",
    "Provider",
    "create_provider",
    "default_http_client",
    "endpoint",
    "json_body",
    "key_from_env",
    "missing_key",
    "stream_batches",
]


@runtime_checkable
class Provider(Protocol):
    """What every provider (HTTP or in-process) offers; see the module docstring."""

    name: str

    def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]: ...

    async def aclose(self) -> None: ...


def _aiohttp_usable() -> bool:
    """Whether an ``HTTPClient`` can serve here: aiohttp installed, on asyncio."""
    if importlib.util.find_spec("aiohttp") is None:  # the core alone: httpx
        return False
    try:
        import asyncio

        asyncio.get_running_loop()  # aiohttp is asyncio-only (trio gets httpx)
    except RuntimeError:
        return False
    return True


class HTTPProvider(_Adapter):
    """Base of the HTTP adapters: pure request building and parsing, shared driving.

    ``client`` is an ``HTTPClient`` (aiohttp) or an ``httpx.AsyncClient`` to
    share; the caller keeps owning it. Without one the provider makes its own,
    on first use, and closes it in ``aclose``: an ``HTTPClient`` on asyncio (the
    relay benchmark's choice, see ``ssegate.llm._client``; it needs aiohttp, from
    the ``gateway`` extra), ``default_http_client()`` (httpx) on trio or without
    aiohttp. Both take proxies and CAs from the environment; pass
    ``HTTPClient(trust_env=False)`` to ignore it, an httpx client for HTTP/2.

    ``max_event_size``: the largest event (SSE) or line (NDJSON) of an answer's
    body accepted, in bytes; a body that sends a bigger one, or a line that does
    not end within it, ends the stream with a ``protocol_error`` ``Error``
    (default: the decoder's ``MAX_EVENT_SIZE``).
    """

    name: str = "http"

    def __init__(
        self,
        *,
        client: HTTPClient | httpx.AsyncClient | None = None,
        max_event_size: int | None = None,
    ) -> None:
        self._client = client
        self._own_client = client is None
        self.max_event_size = max_event_size

    @property
    def client(self) -> HTTPClient | httpx.AsyncClient:
        if self._client is None:
            self._client = HTTPClient() if _aiohttp_usable() else default_http_client()
        return self._client

    def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        """The unified events of ``request``'s answer (see the module docstring)."""
        if not isinstance(request, ChatRequest):
            raise TypeError(f"stream() takes a ChatRequest, not {type(request).__name__}")
        return drive(self.client, self, request)

    def stream_batches(self, request: ChatRequest) -> AsyncIterator[list[LLMEvent]]:
        """The same events, one list per upstream read (see ``stream_batches()``)."""
        if not isinstance(request, ChatRequest):
            raise TypeError(f"stream() takes a ChatRequest, not {type(request).__name__}")
        return drive_batches(self.client, self, request)

    def stream_into(
        self, request: ChatRequest, sink: Callable[[list[LLMEvent]], object]
    ) -> Coroutine[Any, Any, None]:
        """The same lists handed to ``sink``, from the connection's callback where
        the client allows it (see ``drive_into``); awaited, it returns at the
        answer's end (``drive_into``'s coroutine itself: no layer in between)."""
        return drive_into(self.client, self, request, sink)

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def __aenter__(self) -> HTTPProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @abstractmethod
    def build_request(self, request: ChatRequest) -> HTTPRequest:
        """The HTTP request for ``request`` (pure)."""

    @abstractmethod
    def parser(self, request: ChatRequest) -> FrameParser:
        """A fresh parser for one answer's body (pure)."""

    def error_from_response(
        self, status: int, headers: Mapping[str, str], body: bytes, *, url: str | None = None
    ) -> ProviderError:
        """The exception for an error answer before the stream (pure); adapters
        whose provider words errors differently override it. ``url`` is the
        address asked, without credentials or query (named in the message)."""
        return provider_error(self.name, status, headers, body, url=url)


#: ``json.dumps(value, separators=(",", ":"))`` without building an encoder per call.
_compact = json.JSONEncoder(separators=(",", ":")).encode


def json_body(value: Any) -> bytes:
    """A request body: ``value`` as compact JSON (ASCII), encoded."""
    return _compact(value).encode()


def endpoint(base_url: str, path: str) -> str:
    """``base_url`` with ``path`` added to its path; a query (``?api-version=``) is kept."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))


def key_from_env(
    given: str | None, variable: str, base_url: str, home: str
) -> tuple[str | None, str | None]:
    """The key to send, and the variable a missing key must be named by.

    ``given`` wins. Otherwise, as the official SDKs do, the provider's
    conventional ``variable`` (``OPENAI_API_KEY``...) is read, but only when
    ``base_url`` is the provider's own origin (``home``): a key from the
    environment never goes to another server. There the key is required, and
    the variable is returned so a missing key can be named before sending.
    """
    if given is not None:
        return given, None
    if _origin(base_url) != _origin(home):
        return None, None
    return os.environ.get(variable) or None, variable


def missing_key(provider: str, variable: str) -> AuthenticationError:
    """The error for a request that would go to ``provider`` without its key."""
    return AuthenticationError(
        f"{provider} needs an API key: set {variable} (or pass api_key, --api-key)",
        provider=provider,
        code="missing_api_key",
    )


def stream_batches(provider: Provider, request: ChatRequest) -> AsyncIterator[list[LLMEvent]]:
    """A provider's events in lists, one per upstream read where it can say so.

    Relays (the gateway) should write each list with one ``send``: one syscall per
    upstream read instead of per token, and a relay that fell behind catches up.
    Providers with a ``stream_batches`` method (the HTTP ones) give real batches,
    from that method's own iterator (no layer in between: it is every chunk's
    path); for the others every event is its own list. Close it when done
    (``aclosing``), as any provider stream.
    """
    method = getattr(provider, "stream_batches", None)
    if method is not None:
        batches: AsyncIterator[list[LLMEvent]] = method(request)
        return batches
    return _one_by_one(provider, request)


async def _one_by_one(provider: Provider, request: ChatRequest) -> AsyncIterator[list[LLMEvent]]:
    events = provider.stream(request)
    try:
        async for event in events:
            yield [event]
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


#: name -> (module, class, default options). Modules are imported when asked for.
_REGISTRY: Mapping[str, tuple[str, str, Mapping[str, Any]]] = {
    "openai": ("ssegate.llm.providers.openai", "OpenAIProvider", {"vendor": "openai"}),
    "deepseek": ("ssegate.llm.providers.openai", "OpenAIProvider", {"vendor": "deepseek"}),
    "glm": ("ssegate.llm.providers.openai", "OpenAIProvider", {"vendor": "glm"}),
    "zhipu": (
        "ssegate.llm.providers.openai",
        "OpenAIProvider",
        {"vendor": "glm", "name": "zhipu"},
    ),
    "vllm": ("ssegate.llm.providers.openai", "OpenAIProvider", {"vendor": "vllm"}),
    "llamacpp": ("ssegate.llm.providers.openai", "OpenAIProvider", {"vendor": "llamacpp"}),
    "lmstudio": ("ssegate.llm.providers.openai", "OpenAIProvider", {"vendor": "lmstudio"}),
    "openai-compatible": (
        "ssegate.llm.providers.openai",
        "OpenAIProvider",
        {"vendor": "generic", "name": "openai-compatible"},
    ),
    "ollama": ("ssegate.llm.providers.ollama", "OllamaProvider", {}),
    "anthropic": ("ssegate.llm.providers.anthropic", "AnthropicProvider", {}),
    "local": ("ssegate.llm.providers.local", "LocalProvider", {}),
}

#: The provider names ``create_provider`` knows.
PROVIDERS: tuple[str, ...] = tuple(sorted(_REGISTRY))


def create_provider(name: str, /, **options: Any) -> Provider:
    """Build the provider called ``name`` (see ``PROVIDERS``) with ``options``."""
    try:
        module, attr, defaults = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown provider {name!r}; choose one of {', '.join(PROVIDERS)}"
        ) from None
    cls = getattr(import_module(module), attr)
    provider: Provider = cls(**{**defaults, **options})
    return provider
