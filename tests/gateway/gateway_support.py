"""Helpers of the gateway tests (``free_port`` and ``ssegate_serve`` live in
``tests/serve_support.py``, shared with the fault tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from proxy_support import CuttingProxy
from serve_support import free_port, ssegate_serve
from ssegate import Decoder, Event
from ssegate.gateway import LocalSettings, Settings

# A real ``ssegate serve``, for the tests that import it from here.
__all__ = [
    "cutting_proxy",
    "events",
    "free_port",
    "provider",
    "seq",
    "settings",
    "ssegate_serve",
]


def provider(url: str) -> dict[str, object]:
    """Settings routing ``fake/m1`` to an OpenAI-compatible upstream at ``url``."""
    return {
        "providers": {
            "fake": {
                "kind": "openai",
                "base_url": url + "/v1",
                "api_key": "sk-up",
                "models": ["m1"],
            }
        }
    }


def settings(**values: Any) -> Settings:
    """Settings as tests want them: echo unpaced, the local model not preloaded,
    nothing read from the environment."""
    values.setdefault("echo_tokens_per_second", 0.0)
    values.setdefault("local", LocalSettings(preload=False))
    return Settings.model_validate(values)


def events(response: httpx.Response) -> list[Event]:
    """Every event of a whole event-stream body."""
    decoder = Decoder()
    return decoder.feed(response.content) + decoder.close()


def seq(event_id: str) -> int:
    """The number of an event id (``"<epoch>-000000000042"`` -> 42; a part of a
    stored event, ``"<epoch>-000000000042.1"``, -> 42 too)."""
    return int(event_id.rpartition("-")[2].partition(".")[0])


@contextmanager
def cutting_proxy(upstream_port: int, cut_after: int) -> Iterator[str]:
    """A TCP proxy to 127.0.0.1:``upstream_port`` whose *first* connection is cut
    after ``cut_after`` bytes of response (a network blink mid-stream); later
    connections pass whole. Yields its base URL."""
    with CuttingProxy(upstream_port, lambda n: cut_after if n == 0 else None) as proxy:
        yield proxy.url
