"""The gateway's settings: environment variables ``SSEGATE_*`` and a TOML file.

Precedence, highest first: values passed in code (the CLI's flags), environment
variables (``SSEGATE_PORT``, nested with ``__``: ``SSEGATE_LIMITS__MAX_BODY_BYTES``),
the TOML file (``--config``), the defaults below. A TOML file looks like::

    default_model = "openai/gpt-4o-mini"
    store = "redis://127.0.0.1:6379/0"
    cors_origins = ["https://app.example.com"]

    [providers.openai]
    kind = "openai"
    api_key_env = "OPENAI_API_KEY"
    models = ["gpt-4o-mini"]

    [aliases]
    fast = "openai/gpt-4o-mini"

    [[keys]]
    id = "frontend"
    key_env = "SSEGATE_FRONTEND_KEY"
    scopes = ["chat", "subscribe:prices/*"]

Everything is checked when the settings are loaded (``load_settings``), so a bad
file fails at start with the field named (``ConfigError``), never at the first
request: unknown fields, a provider kind ssegate does not know, an alias or
default model that routes nowhere, a key's environment variable that is unset,
a scope that means nothing.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ..llm.providers import PROVIDERS

__all__ = [
    "BUILTIN_MODELS",
    "ConfigError",
    "KeySettings",
    "Limits",
    "LocalSettings",
    "ProviderSettings",
    "Settings",
    "is_loopback",
    "load_settings",
]

#: Models every gateway serves, whatever the configuration.
BUILTIN_MODELS = ("local", "echo")

_SCOPE = re.compile(r"(chat|publish|ops|subscribe:[A-Za-z0-9_.:/@+=*?\[\]-]{1,200})\Z")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")


class ConfigError(ValueError):
    """The settings are invalid; the message names each bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSettings(_Strict):
    """One upstream provider: ``kind`` is a ``create_provider`` name (``openai``,
    ``deepseek``, ``vllm``, ``ollama``, ``anthropic``, ...)."""

    kind: str
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    #: Seconds of silence allowed from the upstream: waiting for its answer's
    #: head, and between any two reads of its body (keep-alive comments count).
    #: Past it the stream ends with a ``timeout`` error.
    timeout: float = Field(default=600.0, gt=0)
    #: Seconds to connect (TCP, proxy tunnel and TLS) before giving up.
    connect_timeout: float = Field(default=10.0, gt=0)
    #: Largest event (or NDJSON line) of its answers accepted, in bytes: a bigger
    #: one, or a line that never ends, ends the stream with a ``protocol_error``
    #: (a token is a few bytes; this bounds what a broken upstream makes us hold).
    max_event_bytes: int = Field(default=1024 * 1024, gt=0)
    #: Models listed on ``GET /v1/models`` as ``<provider>/<model>``; any
    #: ``<provider>/<name>`` routes whether listed or not.
    models: list[str] = Field(default_factory=list)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        remote = [p for p in PROVIDERS if p != "local"]
        if kind not in remote:
            raise ValueError(f"unknown provider kind {kind!r}; choose one of {', '.join(remote)}")
        return kind

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"https?://[^\s/]+", url):
            raise ValueError(f"not an http(s) URL: {url!r}")
        return url

    @model_validator(mode="after")
    def _key_from_env(self) -> ProviderSettings:
        if self.api_key_env is not None and self.api_key is None:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ValueError(
                    f"api_key_env: the environment variable {self.api_key_env} is unset"
                )
            object.__setattr__(self, "api_key", SecretStr(value))
        return self


class KeySettings(_Strict):
    """An API key of the gateway: ``id`` names it in logs and metrics (the key never)."""

    id: str
    key: SecretStr | None = None
    key_env: str | None = None
    #: ``chat`` (chat completions and streams), ``publish`` (topics),
    #: ``subscribe:<pattern>`` (topics matching a glob such as ``prices/*``) and
    #: ``ops`` (the operator's dashboard feed).
    scopes: list[str] = Field(default_factory=lambda: ["chat"])

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"a key id is 1-64 letters, digits, '_', '.' or '-': {value!r}")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, scopes: list[str]) -> list[str]:
        for scope in scopes:
            if not _SCOPE.match(scope):
                raise ValueError(
                    f"unknown scope {scope!r}; use chat, publish, ops or subscribe:<topic pattern>"
                )
        return scopes

    @model_validator(mode="after")
    def _key(self) -> KeySettings:
        if self.key is None:
            if self.key_env is None:
                raise ValueError("give the key as key or key_env")
            value = os.environ.get(self.key_env)
            if not value:
                raise ValueError(f"key_env: the environment variable {self.key_env} is unset")
            object.__setattr__(self, "key", SecretStr(value))
        assert self.key is not None
        if len(self.key.get_secret_value()) < 16:
            raise ValueError("a key must be at least 16 characters long")
        return self


class Limits(_Strict):
    """What one client may ask of the gateway."""

    #: Largest request body accepted (413 beyond it).
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    #: Generations one key (with auth off: one client address) may run at once (429 beyond).
    max_streams_per_key: int = Field(default=64, gt=0)
    #: Topics one key (auth off: one client address) may create (429 beyond);
    #: a topic is kept until the store forgets it, so this bounds their memory.
    max_topics_per_key: int = Field(default=1000, gt=0)


class LocalSettings(_Strict):
    """The embedded ``local`` model."""

    engine: Literal["numpy", "llamacpp", "auto"] = "numpy"
    model_path: str | None = None
    n_ctx: int = Field(default=2048, gt=0)
    max_concurrency: int = Field(default=1, gt=0)
    default_max_tokens: int = Field(default=512, gt=0)
    #: Load the model at start (in the background) when it is the default model,
    #: rather than on the first request for it.
    preload: bool = True


class Settings(BaseSettings):
    """Everything the gateway and ``ssegate serve`` are configured with."""

    model_config = SettingsConfigDict(
        env_prefix="SSEGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    #: ``memory`` (one process) or a Redis URL (replicas and ``--workers``);
    #: ``redis+cluster://`` and any node's address for Redis Cluster.
    store: str = "memory"
    redis_prefix: str = "ssegate:"
    #: Events kept per stream or topic; seconds a finished stream stays readable.
    retention_events: int = Field(default=10_000, gt=0)
    retention_seconds: float = Field(default=3600.0, gt=0)
    #: Seconds of silence before a keep-alive comment.
    keep_alive: float = Field(default=15.0, gt=0)
    #: Seconds a reader may accept no byte before it is dropped (a client that
    #: stopped reading, a half-open socket): what it costs is bounded by then.
    send_timeout: float = Field(default=30.0, gt=0)
    #: Seconds ``ssegate serve`` gives each step of stopping after SIGTERM/SIGINT:
    #: every open stream gets the farewell (``retry`` and a comment) at once and
    #: closes, so its reader reconnects (to another replica behind a balancer);
    #: connections still open after this are cut; then running generations end
    #: with a retryable ``shutdown`` error, within this again.
    shutdown_timeout: float = Field(default=10.0, gt=0)
    #: Seconds a generation goes on with no reader before it is cancelled.
    detach_grace: float = Field(default=30.0, ge=0)
    #: A producer's lease: readers learn of a dead replica within ``lease_ttl``
    #: seconds; a stop from another replica reaches the producer within ``lease_renew``.
    lease_ttl: float = Field(default=10.0, gt=0)
    lease_renew: float = Field(default=0.5, gt=0)
    default_model: str = "local"
    aliases: dict[str, str] = Field(default_factory=dict)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    keys: list[KeySettings] = Field(default_factory=list)
    cors_origins: list[str] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    local: LocalSettings = Field(default_factory=LocalSettings)
    #: The ``echo`` model's pace (0: as fast as it can).
    echo_tokens_per_second: float = Field(default=20.0, ge=0)
    #: Serve without API keys on a non-loopback address (otherwise refused).
    allow_public_without_auth: bool = False

    @field_validator("store")
    @classmethod
    def _store(cls, store: str) -> str:
        schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        if store != "memory" and not store.startswith(schemes):
            raise ValueError(
                "use 'memory' or a Redis URL (redis://host:6379/0, or redis+cluster://host:7000 "
                f"for Redis Cluster), not {store!r}"
            )
        return store

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, providers: dict[str, ProviderSettings]) -> dict[str, ProviderSettings]:
        for name in providers:
            if not _NAME.match(name) or name in BUILTIN_MODELS:
                raise ValueError(f"bad provider name {name!r} (and local/echo are built in)")
        return providers

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not re.match(r"https?://[^\s/]+\Z", origin):
                raise ValueError(f"an origin is scheme://host[:port] with no path: {origin!r}")
        return origins

    @model_validator(mode="after")
    def _routes(self) -> Settings:
        for alias, target in self.aliases.items():
            if alias in BUILTIN_MODELS or "/" in alias:
                raise ValueError(f"aliases.{alias}: an alias is a plain name, not local/echo")
            if self.route_error(target, aliases=False):
                raise ValueError(f"aliases.{alias}: {self.route_error(target, aliases=False)}")
        error = self.route_error(self.default_model)
        if error:
            raise ValueError(f"default_model: {error}")
        ids = [key.id for key in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("keys: two keys share an id")
        secrets = [key.key.get_secret_value() for key in self.keys if key.key is not None]
        if len(set(secrets)) != len(secrets):
            raise ValueError("keys: two keys share a secret")
        return self

    def route_error(self, model: str, *, aliases: bool = True) -> str | None:
        """Why ``model`` routes nowhere, or ``None`` when it routes."""
        if model in BUILTIN_MODELS or (aliases and model in self.aliases):
            return None
        provider, slash, name = model.partition("/")
        if slash and name and provider in self.providers:
            return None
        return f"{model!r} is not local, echo, an alias or <configured provider>/<model>"


class _TomlSource(PydanticBaseSettingsSource):
    """The ``--config`` file's table, as the lowest-priority source."""

    def __init__(self, settings_cls: type[BaseSettings], table: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._table = table

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._table.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._table)


def load_settings(config: str | os.PathLike[str] | None = None, **values: Any) -> Settings:
    """Settings from ``values`` (flags), the environment and the TOML file ``config``.

    Raises ``ConfigError`` naming every bad field (and the file).
    """
    table: dict[str, Any] = {}
    where = "settings"
    if config is not None:
        path = Path(config)
        where = str(path)
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    values = {k: v for k, v in values.items() if v is not None}
    try:
        return _with_table(table, values)
    except ValidationError as exc:
        raise ConfigError(_describe(where, exc)) from None


def _with_table(table: dict[str, Any], values: dict[str, Any]) -> Settings:
    # The TOML table is the lowest-priority source: below init values and the
    # environment. No .env file and no secrets directory: configuration comes
    # from flags, the environment and the --config file only, nothing implicit.
    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, _TomlSource(settings_cls, table)

    loaded: Settings = _Loaded(**values)
    return Settings.model_construct(
        **{name: getattr(loaded, name) for name in Settings.model_fields}
    )


def _describe(where: str, exc: ValidationError) -> str:
    lines = [f"invalid configuration in {where}:"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
