"""The dashboard in Chromium: fed by /v1/dashboard/events, it follows what runs."""

from __future__ import annotations

import json

import httpx
import pytest
from browser_support import CHAT_KEY, OPS_KEY, screenshot
from playwright.sync_api import BrowserContext, expect

pytestmark = pytest.mark.browser


def test_the_dashboard_updates_while_streams_run(
    context: BrowserContext, auth_gateway: str
) -> None:
    key = json.dumps(OPS_KEY)
    context.add_init_script(
        f"if (location.protocol === 'http:') localStorage.setItem('ssegate.apiKey', {key})"
    )
    page = context.new_page()
    page.goto(auth_gateway + "/dashboard")
    expect(page.locator("#state")).to_have_text("live")
    expect(page.locator("#active")).to_have_text("0")
    chat = {"Authorization": f"Bearer {CHAT_KEY}"}
    streams = []
    for model in ("echo", "echo", "fast"):
        body = {"model": model, "messages": [{"role": "user", "content": "go"}], "max_tokens": 400}
        started = httpx.post(auth_gateway + "/v1/streams", json=body, headers=chat)
        assert started.status_code == 201
        streams.append(started.json()["id"])
    expect(page.locator("#active")).to_have_text("3")
    echo, fast = page.locator("tr[data-model=echo]"), page.locator("tr[data-model=fast]")
    expect(echo.locator("[data-field=active]")).to_have_text("2")
    expect(fast.locator("[data-field=active]")).to_have_text("1")
    # Tokens/s counts whole seconds: wait for two of them in the chart's series.
    page.wait_for_function(
        """() => [...document.querySelectorAll('#rows [data-field=tokens]')]
                .every(cell => Number(cell.textContent) >= 60)"""
    )
    for row in (echo, fast):
        assert float(row.locator("[data-field=rate]").inner_text()) > 0
        assert row.locator("[data-field=ttft-p50]").inner_text().endswith(" ms")
        assert row.locator("[data-field=itl-p50]").inner_text().endswith(" ms")
    assert float(page.locator("#rate").inner_text()) > 0
    screenshot(page, "dashboard")
    for stream in streams:
        assert httpx.delete(f"{auth_gateway}/v1/streams/{stream}", headers=chat).status_code == 204
    expect(page.locator("#active")).to_have_text("0")
    expect(echo.locator("[data-field=active]")).to_have_text("0")
