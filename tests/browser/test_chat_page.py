"""The chat page in Chromium against a real ``ssegate serve`` with the echo model.

The echo model answers with the prompt, word by word, at ECHO_PACE tokens/s: the
exact final text is known, and there is time to stop, cut or reload mid-answer.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from browser_support import CHAT_KEY, OPS_KEY, SeveringProxy, screenshot
from gateway_support import events
from playwright.sync_api import BrowserContext, Page, Request, Route, expect

pytestmark = pytest.mark.browser

ANSWER = (
    "Streams of tokens reach this page through the gateway, one event at a time. "
    "Each event carries an id, so a reader that loses its connection asks for what "
    "came after the last one it holds, and the answer goes on from there: nothing "
    "lost and nothing shown twice. The model is asked once, whatever happens to "
    "the connection or to the page on the way."
)
LONG = " ".join(f"w{i}" for i in range(200))  # five seconds at 40 tokens/s


def open_chat(context: BrowserContext, url: str) -> Page:
    page = context.new_page()
    page.goto(url + "/")
    page.wait_for_selector("#model option[value=echo]", state="attached")
    page.select_option("#model", "echo")
    return page


def ask(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def last_answer(page: Page) -> str:
    return str(page.locator(".msg.assistant .content").last.inner_text())


def wait_words(page: Page, count: int) -> None:
    """Until the last answer shows at least ``count`` words (mid-answer)."""
    page.wait_for_function(
        """count => {
            const all = document.querySelectorAll('.msg.assistant .content');
            const last = all[all.length - 1];
            return last && last.innerText.trim().split(/\\s+/).filter(Boolean).length >= count;
        }""",
        arg=count,
    )


def wait_state(page: Page, state: str) -> None:
    page.wait_for_selector(f".msg.assistant:last-child[data-state={state}]")


def posts(requests: list[Request]) -> list[Request]:
    """The requests that started a generation (the page starts each by POST /v1/streams)."""
    return [r for r in requests if r.method == "POST" and r.url.endswith("/v1/streams")]


@pytest.fixture
def requests(context: BrowserContext) -> list[Request]:
    """Every request the context's pages send (filled as they go)."""
    seen: list[Request] = []
    context.on("request", lambda request: seen.append(request))
    return seen


def test_an_answer_streams_in_with_its_figures(
    context: BrowserContext, echo_gateway: str, requests: list[Request]
) -> None:
    page = open_chat(context, echo_gateway)
    ask(page, ANSWER)
    wait_words(page, 3)
    expect(page.locator("#stop")).to_be_visible()  # generating: Stop instead of Send
    wait_state(page, "done")
    assert last_answer(page) == ANSWER
    assert page.locator(".msg.user .bubble").inner_text() == ANSWER
    meta = page.locator(".msg.assistant .meta").inner_text()
    assert re.fullmatch(r"echo\nTTFT \d+ ms\n\d+\.\d tok/s\n66 tokens\nRetry", meta), (
        meta
    )  # usage: 66 words
    expect(page.locator("#send")).to_be_visible()
    assert len(posts(requests)) == 1
    # Retry asks again (a second POST) and replaces the answer with the same text.
    page.click(".msg.assistant .retry")
    wait_state(page, "done")
    assert page.locator(".msg.assistant").count() == 1
    assert last_answer(page) == ANSWER
    assert len(posts(requests)) == 2
    page.click("#new-chat")
    assert page.locator(".msg").count() == 0
    expect(page.locator("#empty")).to_be_visible()


def test_stop_stops_the_generation_upstream(context: BrowserContext, echo_gateway: str) -> None:
    page = open_chat(context, echo_gateway)
    with page.expect_response(re.compile(r"/v1/streams$")) as answered:
        ask(page, LONG)
    stream = answered.value.json()["id"]
    wait_words(page, 3)
    with page.expect_request(lambda r: r.method == "DELETE") as stopping:
        page.click("#stop")
    assert stopping.value.url == f"{echo_gateway}/v1/streams/{stream}"
    wait_state(page, "stopped")
    *words, notice = last_answer(page).split()
    assert notice == "Stopped."
    assert 3 <= len(words) < 200
    assert words == LONG.split()[: len(words)]  # a prefix: nothing lost, nothing twice
    # The generation really stopped: its stream ends with the cancellation, well
    # before the 200 tokens the model was asked for.
    replay = httpx.get(f"{echo_gateway}/v1/streams/{stream}?format=native", timeout=10)
    kinds = [e.event for e in events(replay)]
    assert kinds[-1] == "error"
    assert json.loads(events(replay)[-1].data)["code"] == "cancelled"
    assert kinds.count("token") < 200
    assert "done" not in kinds


def test_a_cut_connection_resumes_with_the_exact_text(
    context: BrowserContext, echo_gateway: str
) -> None:
    port = int(echo_gateway.rsplit(":", 1)[1])
    with SeveringProxy(port).running() as proxy:
        page = open_chat(context, proxy.url)
        ask(page, ANSWER)
        wait_words(page, 5)
        assert proxy.sever() >= 1  # the streaming connection, closed mid-answer
        wait_state(page, "done")
        assert last_answer(page) == ANSWER
        assert len(proxy.seen("POST", "/v1/streams")) == 1  # never sent again
        reads = proxy.seen("GET", "/v1/streams/")
        assert len(reads) >= 2, proxy.requests  # the first read, then the resume
        assert all(r.path.endswith("?format=openai&include_usage=true") for r in reads)
        assert "last-event-id" not in reads[0].headers
        assert re.fullmatch(r"\w+-\d+", reads[1].headers["last-event-id"])


def test_a_reload_mid_answer_picks_the_stream_up(
    context: BrowserContext, echo_gateway: str, requests: list[Request]
) -> None:
    page = open_chat(context, echo_gateway)
    ask(page, ANSWER)
    wait_words(page, 5)
    page.reload()
    wait_state(page, "done")
    assert last_answer(page) == ANSWER
    assert page.locator(".msg.user .bubble").inner_text() == ANSWER
    assert len(posts(requests)) == 1
    reads = [r for r in requests if "/v1/streams/" in r.url and r.method == "GET"]
    assert len(reads) == 2  # the first page's read, the reloaded page's resume
    assert "last-event-id" not in reads[0].all_headers()
    assert reads[1].all_headers()["last-event-id"]


def test_a_reload_before_the_first_token_picks_the_stream_up(
    context: BrowserContext, echo_gateway: str, requests: list[Request]
) -> None:
    # The generation is named by its POST at once; its first read is held here
    # (no token reaches the page) and the page reloads: the reloaded page reads
    # the stream from its start, and the model was asked once.
    page = open_chat(context, echo_gateway)
    reads = re.compile(r"/v1/streams/gen_[0-9a-f]+\?")
    held: list[Route] = []
    page.route(reads, lambda route: held.append(route))
    ask(page, ANSWER)
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(20)  # lets Playwright run the route handler
    assert len(held) == 1
    held[0].abort()  # the first read never reaches the gateway
    page.unroute_all(behavior="ignoreErrors")
    page.reload()
    wait_state(page, "done")
    assert last_answer(page) == ANSWER
    assert len(posts(requests)) == 1
    gets = [r for r in requests if reads.search(r.url) and r.method == "GET"]
    assert len(gets) == 2
    assert "last-event-id" not in gets[1].all_headers()  # nothing was received: from the start


def test_hostile_output_is_shown_as_text(context: BrowserContext, echo_gateway: str) -> None:
    hostile = (
        '<script>window.pwned = 1</script> <img src=x onerror="window.pwned = 2"> '
        '<b>bold?</b> [click](javascript:window.pwned=3) <a href="javascript:void(0)">a</a>'
    )
    page = open_chat(context, echo_gateway)
    ask(page, hostile)
    wait_state(page, "done")
    assert last_answer(page) == hostile
    assert page.locator(".msg.user .bubble").inner_text() == hostile
    for selector in ("script", "img", "b", "a", "[onerror]"):
        assert page.locator(f".conversation {selector}").count() == 0, selector
    assert page.evaluate("typeof window.pwned") == "undefined"


MARKDOWN = {
    "**bold** and *it* `x<y`": "<p><strong>bold</strong> and <em>it</em> <code>x&lt;y</code></p>",
    "a\nb\n\nc": "<p>a<br>b</p><p>c</p>",
    "- one\n- two\n  - deep\n1. first": (
        "<ul><li>one</li><li>two<ul><li>deep</li></ul></li></ul><ol><li>first</li></ol>"
    ),
    "```py\nif a < b:\n    pass\n```": (
        '<pre data-lang="py"><code>if a &lt; b:\n    pass</code></pre>'
    ),
    "```\nunclosed": "<pre><code>unclosed</code></pre>",
    "[ok](https://e.test/a?b=1) [no](javascript:alert(1)) [no](data:x)": (
        '<p><a href="https://e.test/a?b=1" rel="noopener noreferrer nofollow" '
        'target="_blank">ok</a> [no](javascript:alert(1)) [no](data:x)</p>'
    ),
    "see https://e.test/x.": (
        '<p>see <a href="https://e.test/x" rel="noopener noreferrer nofollow" '
        'target="_blank">https://e.test/x</a>.</p>'
    ),
    "snake_case_name and 2*3*4": "<p>snake_case_name and 2*3*4</p>",
    "### Title": "<h5>Title</h5>",
    "\\*not em\\*": "<p>*not em*</p>",
    '<img src=x onerror="alert(1)">': '<p>&lt;img src=x onerror="alert(1)"&gt;</p>',
}


def test_the_markdown_renderer_builds_only_safe_nodes(
    context: BrowserContext, echo_gateway: str
) -> None:
    page = context.new_page()
    page.goto(echo_gateway + "/")
    rendered = page.evaluate(
        """async cases => {
            const { renderMarkdown } = await import('/static/markdown.js');
            const out = {};
            for (const source of cases) {
                const box = document.createElement('div');
                box.append(renderMarkdown(source));
                out[source] = box.innerHTML;
            }
            return out;
        }""",
        list(MARKDOWN),
    )
    assert rendered == MARKDOWN


def test_the_chat_page_works_with_auth_on(context: BrowserContext, auth_gateway: str) -> None:
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(auth_gateway + "/")
    expect(page.locator("#status")).to_have_text(
        "An API key is required: 'Authorization: Bearer <key>' or ?access_token=<key>. "
        "Type your API key at the top right."
    )
    page.fill("#api-key", CHAT_KEY)
    page.press("#api-key", "Enter")
    page.locator("#api-key").blur()
    page.wait_for_selector("#model option[value=echo]", state="attached")
    page.select_option("#model", "echo")
    ask(page, "With a key, the answer streams.")
    wait_state(page, "done")
    assert last_answer(page) == "With a key, the answer streams."
    assert all(CHAT_KEY not in url for url in urls)  # sent as a header, never in a URL
    # The dashboard wants the ops scope: the chat key is refused, with the reason shown.
    page.goto(auth_gateway + "/dashboard")
    expect(page.locator("#problem")).to_have_text(
        "This API key lacks the scope 'ops'. The dashboard needs a key with the ops scope."
    )
    page.fill("#api-key", OPS_KEY)
    page.locator("#api-key").blur()
    expect(page.locator("#state")).to_have_text("live")
    expect(page.locator("#problem")).to_be_hidden()


def test_screenshot_of_a_conversation(context: BrowserContext, echo_gateway: str) -> None:
    page = open_chat(context, echo_gateway)
    ask(page, "Hello! Are you there?")
    wait_state(page, "done")
    page.select_option("#model", "demo/gpt-4o-mini")
    ask(page, "How do I follow a topic from Python?")
    wait_state(page, "done")
    assert page.locator(".msg.assistant").count() == 2
    answer = page.locator(".msg.assistant").last
    assert answer.locator("pre code").inner_text().startswith("from ssegate import")
    assert answer.locator("li").count() == 2
    assert answer.locator("a").get_attribute("href") == "https://example.com/ssegate"
    screenshot(page, "chat")
