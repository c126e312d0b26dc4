"""The gateway: ``ssegate serve`` as an ASGI app you can embed.

``create_app(settings)`` builds it; ``load_settings(config, **flags)`` reads
settings from flags, ``SSEGATE_*`` environment variables and a TOML file. The
HTTP surface is in DESIGN.md ("The gateway's HTTP surface").
"""

from .._extras import require

require("gateway", "ssegate.gateway")

from ._app import create_app  # noqa: E402
from ._echo import EchoProvider  # noqa: E402
from ._settings import (  # noqa: E402
    BUILTIN_MODELS,
    ConfigError,
    KeySettings,
    Limits,
    LocalSettings,
    ProviderSettings,
    Settings,
    is_loopback,
    load_settings,
)

__all__ = [
    "BUILTIN_MODELS",
    "ConfigError",
    "EchoProvider",
    "KeySettings",
    "Limits",
    "LocalSettings",
    "ProviderSettings",
    "Settings",
    "create_app",
    "is_loopback",
    "load_settings",
]
