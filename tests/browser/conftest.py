"""Fixtures of the browser tests: Debian's headless Chromium driven by Playwright, and
real ``ssegate serve`` processes (``gateway_support.ssegate_serve``).

Chromium comes from the system (``scripts/ensure-chromium``, run by ``make test``):
Playwright drives it through ``executable_path`` and downloads nothing. Each test
gets a fresh browser context (its own storage); any uncaught error in a page or a
Content-Security-Policy violation fails it. Screenshots (``browser_support.screenshot``)
go to ``artifacts/screenshots/`` and are listed at the end of the run.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))

from browser_support import CHAT_KEY, OPS_KEY, SHOTS
from gateway_support import ssegate_serve
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from ssegate.testing import FakeUpstream, Reply

CHROMIUM = os.environ.get("SSEGATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
#: The echo model's pace in the browser tests: slow enough to act mid-answer.
ECHO_PACE = 40


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SHOTS:
        terminalreporter.write_sep("-", "browser screenshots")
        for path in SHOTS:
            terminalreporter.write_line(str(path))


# Per module, not per session: while Playwright's sync API runs, its event loop is
# the thread's running loop, and the rest of the suite (asyncio, anyio) cannot start
# one of its own. Leaving the module stops it.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-chromium (make test does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class PageErrors:
    """Uncaught errors and CSP violations of the pages of one context."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console: {message.text}")
                if "Content Security Policy" in message.text
                else None
            ),
        )


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser context (own storage), 1200x800; fails the test on page errors."""
    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    ctx.set_default_timeout(15_000)
    errors = PageErrors()
    ctx.on("page", errors.watch)
    try:
        yield ctx
    finally:
        ctx.close()
    assert errors.errors == []


def _config(tmp: Path, name: str, text: str) -> str:
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return str(path)


_BASE = f"""
default_model = "echo"
echo_tokens_per_second = {ECHO_PACE}
detach_grace = 30
keep_alive = 5

[aliases]
fast = "echo"

[local]
preload = false
"""


def _serving(configs: dict[str, str]) -> Iterator[dict[str, str]]:
    """``ssegate serve`` for each config, started side by side (each start is mostly
    waiting); yields their URLs by name, all stopped after."""
    urls: dict[str, str] = {}
    failures: list[BaseException] = []
    started = threading.Semaphore(0)
    stop = threading.Event()

    def serve(name: str, config: str) -> None:
        try:
            with ssegate_serve(config) as (url, _):
                urls[name] = url
                started.release()
                stop.wait()
        except BaseException as exc:
            failures.append(exc)
            started.release()

    threads = [threading.Thread(target=serve, args=item) for item in configs.items()]
    for thread in threads:
        thread.start()
    try:
        for _ in threads:
            started.acquire()
        if failures:
            raise failures[0]
        yield urls
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)


#: What the fake provider ``demo/gpt-4o-mini`` answers, in turn (then the last again).
DEMO_ANSWERS = (
    "Use `ssegate`'s **EventSource**: it reconnects by itself and resumes after the "
    "last event id.\n\n"
    "```python\nfrom ssegate import EventSource\n\n"
    'with EventSource("http://127.0.0.1:8000/v1/topics/demo") as source:\n'
    "    for event in source:\n        print(event.id, event.data)\n```\n\n"
    "- no event is *lost* or shown twice\n- `retry:` from the server is obeyed\n\n"
    "More in the [README](https://example.com/ssegate).",
)


def openai_reply(text: str) -> Reply:
    """``text`` as an OpenAI provider streams it: one chunk per word, then [DONE]."""
    base = {"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": 1}
    deltas = [{"role": "assistant", "content": ""}]
    deltas += [{"content": token} for token in re.findall(r"\s*\S+|\s+", text)]
    chunks = [
        {**base, "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": d}]} for d in deltas
    ]
    chunks.append(
        {
            **base,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    body = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks] + [b"data: [DONE]\n\n"]
    return Reply(200, (("content-type", "text/event-stream"),), tuple(body))


# The gateways serve every browser test, and stop after the last one (not at the
# end of the session: the fake upstream's server thread would tick on in this
# process through the rest of the suite, and the gc tests count objects).
_GATEWAYS = ExitStack()
_HERE = Path(__file__).resolve().parent


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if nextitem is None or _HERE not in Path(nextitem.path).resolve().parents:
        _GATEWAYS.close()


@pytest.fixture
def gateways(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two real ``ssegate serve``, echo paced at ECHO_PACE tokens/s and the provider
    ``demo`` (a FakeUpstream answering DEMO_ANSWERS): ``echo`` with auth off, ``auth``
    with the keys CHAT_KEY (chat, publish, subscribe) and OPS_KEY (ops). Started for
    the first browser test, stopped after the last."""
    if not _RUNNING:
        upstream = FakeUpstream().add("/v1/chat/completions", *map(openai_reply, DEMO_ANSWERS))
        upstream_url = _GATEWAYS.enter_context(upstream.run())
        running = _gateways(tmp_path_factory, upstream_url)
        _RUNNING.update(next(running))
        _GATEWAYS.callback(_RUNNING.clear)
        _GATEWAYS.callback(running.close)
    return _RUNNING


_RUNNING: dict[str, str] = {}


def _gateways(
    tmp_path_factory: pytest.TempPathFactory, upstream_url: str
) -> Iterator[dict[str, str]]:
    demo = f"""
[providers.demo]
kind = "openai"
base_url = "{upstream_url}/v1"
api_key = "unused"
models = ["gpt-4o-mini"]
"""
    keys = f"""
[[keys]]
id = "web"
key = "{CHAT_KEY}"
scopes = ["chat", "publish", "subscribe:*"]

[[keys]]
id = "ops"
key = "{OPS_KEY}"
scopes = ["ops"]
"""
    tmp = tmp_path_factory.mktemp("gateways")
    configs = {
        "echo": _config(tmp, "echo", _BASE + demo),
        "auth": _config(tmp, "auth", _BASE + demo + keys),
    }
    yield from _serving(configs)


@pytest.fixture
def echo_gateway(gateways: dict[str, str]) -> str:
    """The URL of a gateway with auth off."""
    return gateways["echo"]


@pytest.fixture
def auth_gateway(gateways: dict[str, str]) -> str:
    """The URL of a gateway with auth on (CHAT_KEY, OPS_KEY)."""
    return gateways["auth"]
