"""The pages and their files: served from the package, with strict security headers."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib import resources

import httpx
import pytest

from ssegate.gateway import _pages
from ssegate.gateway._pages import ASSETS, PAGES, SECURITY_HEADERS


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data


def test_every_page_and_file_is_served_with_the_security_headers(echo_url: str) -> None:
    paths = [*PAGES, *(f"/static/{name}" for name in ASSETS), "/favicon.ico"]
    for path in paths:
        response = httpx.get(echo_url + path)
        assert response.status_code == 200, path
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value, (path, name)
        assert response.headers["cache-control"] == "no-cache"
        again = httpx.get(echo_url + path, headers={"if-none-match": response.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""
    types = {
        "/": "text/html; charset=utf-8",
        "/static/chat.js": "text/javascript; charset=utf-8",
        "/static/style.css": "text/css; charset=utf-8",
        "/favicon.ico": "image/svg+xml",
    }
    for path, content_type in types.items():
        assert httpx.get(echo_url + path).headers["content-type"] == content_type
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self';" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp


def test_unknown_files_are_404_in_the_api_shape(echo_url: str) -> None:
    for path in ("/static/nope.js", "/static/..%2f_app.py", "/static/", "/chat.html"):
        response = httpx.get(echo_url + path)
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("name", sorted(set(PAGES.values())))
def test_pages_have_no_inline_script_or_style_and_name_only_shipped_files(name: str) -> None:
    html = resources.files(_pages.__package__).joinpath("static", name).read_text()
    tags = Tags()
    tags.feed(html)
    assert tags.script_text.strip() == ""
    for tag, attrs in tags.tags:
        assert tag != "style"
        assert "style" not in attrs, tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        for attr in ("src", "href"):
            url = attrs.get(attr)
            if url and url.startswith("/static/"):
                assert url.removeprefix("/static/") in ASSETS, url
            elif url:
                assert url in ("/", *PAGES), url  # nothing from another origin


def test_every_listed_file_ships_in_the_package() -> None:
    static = resources.files(_pages.__package__).joinpath("static")
    for name in [*ASSETS, *PAGES.values()]:
        assert static.joinpath(name).is_file(), name
    # The scripts import only from this origin.
    for name in ASSETS:
        if name.endswith(".js"):
            text = static.joinpath(name).read_text()
            for target in re.findall(r'from\s+"([^"]+)"', text):
                assert target.startswith("/"), (name, target)
