"""Model routing: which provider answers a model name, and which models there are.

Names are ``local`` (the embedded model), ``echo`` (the simulated one), an
alias from the settings, or ``<provider>/<model>`` for a configured provider
(its ``<model>`` is what the upstream is asked for). One provider object per
configured provider, built when the gateway starts and closed when it stops.

The local model loads in the background at start (``load_local``); ``ready``
says whether it has, so ``/readyz`` and the chat route can tell.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .._exceptions import ProviderError, UpstreamUnavailable
from .._extras import MissingExtra
from ..llm import ChatRequest, LLMEvent
from ..llm.providers import HTTPClient, Provider, create_provider
from ._echo import EchoProvider
from ._settings import Settings

__all__ = ["Models", "Route", "UnknownModel"]

log = logging.getLogger("ssegate.gateway")


class MissingLocal:
    """The ``local`` model where the ``local`` extra is not installed: it says so."""

    name = "local"

    def __init__(self, message: str) -> None:
        self.message = message

    async def engine(self) -> None:
        raise UpstreamUnavailable(
            self.message, provider="local", code="model_not_found", status=503
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        await self.engine()  # raises
        nothing: tuple[LLMEvent, ...] = ()
        for event in nothing:  # a generator all the same
            yield event

    async def aclose(self) -> None:
        pass


class UnknownModel(LookupError):
    """No provider answers this model name."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request for ``model`` goes: ``provider``, asked for ``upstream_model``.

    ``label`` names it in metrics: ``model`` when the settings name it (built in,
    an alias, a listed model), else ``<provider>/*``. Any ``<provider>/<name>``
    routes, so a client choosing names must not choose how many series exist.
    """

    model: str
    provider: Provider
    upstream_model: str
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.model)


class Models:
    """The providers of one gateway, and the names that route to them."""

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        local: Provider | None = None,
    ) -> None:
        self.settings = settings
        self.echo = EchoProvider(tokens_per_second=settings.echo_tokens_per_second, sleep=sleep)
        if local is None:
            options: dict[str, Any] = {
                "engine_kind": settings.local.engine,
                "n_ctx": settings.local.n_ctx,
                "max_concurrency": settings.local.max_concurrency,
                "default_max_tokens": settings.local.default_max_tokens,
            }
            if settings.local.model_path is not None:
                options["model_path"] = settings.local.model_path
            try:
                local = create_provider("local", **options)
            except MissingExtra as exc:  # the gateway without the 'local' extra
                local = MissingLocal(str(exc))
        self.local = local
        self.local_ready = anyio.Event()
        self.local_error: str | None = None
        #: Where ``want_local`` starts the load (the app's lifespan sets it).
        self.loader: TaskGroup | None = None
        self._loading = False
        self.upstreams: dict[str, Provider] = {}
        #: The routes made so far of names the settings fix (see ``route``).
        self._routes: dict[str, Route] = {}
        #: One HTTP client per provider, with its timeouts (closed in ``aclose``).
        self._clients: list[HTTPClient] = []
        for name, config in settings.providers.items():
            client = HTTPClient(connect_timeout=config.connect_timeout, read_timeout=config.timeout)
            self._clients.append(client)
            upstream: dict[str, Any] = {
                "client": client,
                "max_event_size": config.max_event_bytes,
            }
            if config.base_url is not None:
                upstream["base_url"] = config.base_url
            if config.api_key is not None:
                upstream["api_key"] = config.api_key.get_secret_value()
            if config.headers:
                upstream["headers"] = dict(config.headers)
            self.upstreams[name] = create_provider(config.kind, **upstream)

    def names(self) -> list[str]:
        """Every name ``GET /v1/models`` lists, in a stable order."""
        names = ["local", "echo", *sorted(self.settings.aliases)]
        for provider, config in sorted(self.settings.providers.items()):
            names.extend(f"{provider}/{model}" for model in config.models)
        return names

    def route(self, model: str) -> Route:
        """The route of ``model``; ``UnknownModel`` when there is none.

        The routes of the names the settings fix (``local``, ``echo``, the
        aliases) are made once: every request asks for one.
        """
        route = self._routes.get(model)
        if route is not None:
            return route
        target = self.settings.aliases.get(model, model)
        if target == "local":
            route = Route(model, self.local, "local")
        elif target == "echo":
            route = Route(model, self.echo, "echo")
        else:
            provider, slash, name = target.partition("/")
            upstream = self.upstreams.get(provider) if slash and name else None
            if upstream is None:
                raise UnknownModel(model)
            config = self.settings.providers[provider]
            listed = model in self.settings.aliases or name in config.models
            route = Route(model, upstream, name, model if listed else f"{provider}/*")
            if not listed:  # a name the client chose: not kept (their number is not bounded)
                return route
        self._routes[model] = route
        return route

    def ready(self, model: str) -> bool:
        """Whether ``model`` can answer now (only the local model takes time to load)."""
        try:
            route = self.route(model)
        except UnknownModel:
            return False
        return self.answers_now(route)

    def answers_now(self, route: Route) -> bool:
        """Whether ``route``'s provider can answer now (the local model once loaded)."""
        return route.provider is not self.local or self.local_ready.is_set()

    def want_local(self) -> None:
        """Start loading the local model in the background, unless it is (being) loaded."""
        if not self._loading and self.loader is not None:
            self._loading = True
            self.loader.start_soon(self.load_local, name="ssegate-load-local")

    async def load_local(self) -> None:
        """Load the local model (in a worker thread); sets ``local_ready``."""
        engine = getattr(self.local, "engine", None)
        try:
            if engine is not None:
                await engine()
        except ProviderError as exc:
            self.local_error = str(exc)
            log.error("the local model could not be loaded: %s", exc)
            return
        self.local_ready.set()

    async def aclose(self) -> None:
        for provider in (*self.upstreams.values(), self.local, self.echo):
            with anyio.CancelScope(shield=True):
                await provider.aclose()
        for client in self._clients:
            with anyio.CancelScope(shield=True):
                await client.aclose()
