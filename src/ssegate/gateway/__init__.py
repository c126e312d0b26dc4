"""The gateway: ``ssegate serve`` as an ASGI app you can embed.

``create_app(settings)`` builds it; ``load_settings(config, **flags)`` reads
settings from flags, ``SSEGATE_*`` environment variables and a TOML file. The
HTTP surface is in DESIGN.md ("The gateway's HTTP surface").
"""

from ._app import create_app
from ._echo import EchoProvider
from ._settings import (
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
