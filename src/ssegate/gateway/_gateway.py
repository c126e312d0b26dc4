"""``Gateway``: the parts of one running gateway, handed to its routes.

``create_app`` builds one per app (no module state: two apps in one process
share nothing) and keeps it in ``app.state.gateway``; routes take it with the
``gateway`` dependency. The hub and the runner exist while the app runs
(between lifespan startup and shutdown).
"""

from __future__ import annotations

from fastapi import Request

from ..streams import Hub, StreamStore
from ._auth import TOKEN_SCOPE_KEY, Auth, Principal
from ._metrics import Metrics
from ._models import Models
from ._presence import Presence
from ._quota import TopicQuota
from ._runner import Runner
from ._settings import Settings

__all__ = ["Gateway", "gateway", "principal"]


class Gateway:
    """Settings, store, models, auth and metrics; hub and runner once started."""

    def __init__(
        self, settings: Settings, store: StreamStore, models: Models, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.metrics = metrics
        self.auth = Auth(settings.keys)
        self.presence = Presence(store)
        self.topics = TopicQuota(settings.limits.max_topics_per_key)
        self._hub: Hub | None = None
        self._runner: Runner | None = None

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("the gateway is not running (lifespan not started)")
        return self._hub

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            raise RuntimeError("the gateway is not running (lifespan not started)")
        return self._runner


# The dependencies are ``async def`` though they never wait: FastAPI runs a
# plain ``def`` dependency in its thread pool, a thread round trip per request
# (9-12 % of the gateway's CPU at 1 000 streams in benchmarks/gateway.py).


async def gateway(request: Request) -> Gateway:
    """The dependency routes take their gateway from."""
    found: Gateway = request.app.state.gateway
    return found


async def principal(request: Request) -> Principal:
    """The dependency that authenticates a request (``ApiError`` 401 when it fails)."""
    found: Gateway = request.app.state.gateway
    client = request.client
    # request.headers.get("authorization") without Mapping.get's KeyError raised
    # and caught when there is none (a stream start's ~2 µs): its first value.
    authorization = None
    for name, value in request.headers.raw:
        if name == b"authorization":
            authorization = value.decode("latin-1")
            break
    return found.auth.authenticate(
        authorization,
        request.scope.get(TOKEN_SCOPE_KEY),
        client.host if client is not None else None,
    )
