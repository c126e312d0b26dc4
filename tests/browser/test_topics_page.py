"""The topics page in Chromium: the browser's own EventSource, live and resuming."""

from __future__ import annotations

import re

import httpx
import pytest
from browser_support import SeveringProxy, screenshot
from playwright.sync_api import BrowserContext, expect

pytestmark = pytest.mark.browser

TOPIC = "news/today"


def test_published_events_arrive_and_a_cut_resumes_with_last_event_id(
    context: BrowserContext, echo_gateway: str
) -> None:
    port = int(echo_gateway.rsplit(":", 1)[1])
    with SeveringProxy(port).running() as proxy:
        page = context.new_page()
        page.goto(f"{proxy.url}/topics?topic={TOPIC}&types=message,price")
        expect(page.locator("#state")).to_have_text("live")
        data = page.locator("#events .event:not(.note) .data")
        # Published from the page's own form...
        page.fill("#pub-data", "Markets open at nine.")
        page.click("#publish button")
        expect(data).to_have_text(["Markets open at nine."])
        expect(page.locator("#pub-status")).to_have_text(re.compile(r"Published as \w+-0+1\."))
        assert len(proxy.seen("POST", f"/v1/topics/{TOPIC}")) == 1
        # ...and from elsewhere, with an event type the page listens to.
        second = httpx.post(
            f"{echo_gateway}/v1/topics/{TOPIC}", json={"event": "price", "data": {"eurusd": 1.0842}}
        ).json()["id"]
        expect(data).to_have_text(['{\n  "eurusd": 1.0842\n}', "Markets open at nine."])
        # A network blink; meanwhile one more event is published.
        assert proxy.sever() >= 1
        expect(page.locator("#state")).to_have_text("reconnecting")
        httpx.post(f"{echo_gateway}/v1/topics/{TOPIC}", json={"data": "Published while cut."})
        expect(page.locator("#state")).to_have_text("live", timeout=10_000)
        expect(data).to_have_text(
            ["Published while cut.", '{\n  "eurusd": 1.0842\n}', "Markets open at nine."]
        )
        expect(page.locator("#count")).to_have_text("3")
        subscriptions = proxy.seen("GET", f"/v1/topics/{TOPIC}")
        assert len(subscriptions) == 2
        assert "last-event-id" not in subscriptions[0].headers
        assert subscriptions[1].headers["last-event-id"] == second
        screenshot(page, "topics")
