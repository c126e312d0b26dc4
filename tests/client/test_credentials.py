"""Credentials stay with their origin: resuming by ``Link`` and following redirects.

The decision (``headers_for`` and friends) is tested without sockets; then two
real uvicorn servers on 127.0.0.1 (two ports, so two origins) show what each
one received, with the sync client and the async one on asyncio and trio, and
through ``ssegate listen``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from client_scripts import (
    MODES,
    Outcome,
    Reply,
    Resume,
    Script,
    Seen,
    Step,
    Stream,
    run,
)
from hypothesis import given
from hypothesis import strategies as st

from ssegate import Event, ReconnectPolicy, ResponseError
from ssegate.client import EventSource
from ssegate.client._base import (
    CREDENTIAL_HEADERS,
    Request,
    headers_for,
    origin_of,
    parse_origin,
    resolve,
    sends_credentials,
)

MakeScript = Callable[[list[Step]], Script]

SECRETS = {
    "Authorization": "Bearer sk-secret",
    "cookie": "session=s3cret",
    "PROXY-AUTHORIZATION": "Basic cHJveHk6cHc=",
}
PLAIN = {"X-Trace": "t-1", "Accept-Language": "fr"}


def _no_sleep(delay: float) -> None:
    pass


# -- the decision, without I/O -------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://example.com/x", ("http", "example.com", 80)),
        ("http://example.com:80/x", ("http", "example.com", 80)),
        ("HTTP://Example.COM:80", ("http", "example.com", 80)),
        ("https://example.com", ("https", "example.com", 443)),
        ("https://example.com:443/a?b#c", ("https", "example.com", 443)),
        ("https://example.com:8443", ("https", "example.com", 8443)),
        ("http://u:p@127.0.0.1:9/x", ("http", "127.0.0.1", 9)),
        ("http://[::1]:8000/", ("http", "::1", 8000)),
        ("http://bücher.de/", ("http", "bücher.de", 80)),
        ("http://xn--bcher-kva.de/", ("http", "bücher.de", 80)),
    ],
)
def test_origin_normalises_case_default_ports_and_idna(
    url: str, origin: tuple[str, str, int]
) -> None:
    assert origin_of(httpx.URL(url)) == origin


ALL = {**SECRETS, **PLAIN, "Host": "api.example.com"}
STRIPPED = dict(PLAIN)


@pytest.mark.parametrize(
    ("origin", "target", "kept"),
    [
        ("https://api.example.com/v1/chat", "https://api.example.com/v1/streams/1", ALL),
        ("https://api.example.com/v1/chat", "https://API.example.com:443/other", ALL),
        ("http://api.example.com:80/v1/chat", "http://api.example.com/v1/streams/1", ALL),
        ("https://api.example.com/v1/chat", "https://evil.example.com/v1/streams/1", STRIPPED),
        ("https://api.example.com/v1/chat", "https://example.com/v1/streams/1", STRIPPED),
        ("https://api.example.com/v1/chat", "https://api.example.com:8443/s", STRIPPED),
        ("https://api.example.com/v1/chat", "http://api.example.com/v1/streams/1", STRIPPED),
        ("http://api.example.com/v1/chat", "https://api.example.com/v1/streams/1", STRIPPED),
        ("http://127.0.0.1:8000/a", "http://127.0.0.1:8001/a", STRIPPED),
        ("http://127.0.0.1:8000/a", "http://localhost:8000/a", STRIPPED),
    ],
)
def test_headers_for_same_origin_keeps_other_origin_strips(
    origin: str, target: str, kept: dict[str, str]
) -> None:
    assert headers_for(httpx.URL(origin), httpx.URL(target), ALL) == kept
    assert sends_credentials(httpx.URL(origin), httpx.URL(target)) == (kept == ALL)


def test_headers_for_strips_every_spelling_and_keeps_the_rest() -> None:
    headers = {name: "x" for name in ["authorization", "AUTHORIZATION", "Cookie", "cOOKIE"]}
    headers |= {"Proxy-Authorization": "x", "X-Authorization-Hint": "keep", "Cookies": "keep"}
    out = headers_for(httpx.URL("http://a/"), httpx.URL("http://b/"), headers)
    assert out == {"X-Authorization-Hint": "keep", "Cookies": "keep"}
    assert {"authorization", "cookie", "proxy-authorization"} == CREDENTIAL_HEADERS


def test_trusted_origins_receive_credentials() -> None:
    trusted = {parse_origin("https://stream.example.com"), parse_origin("http://10.0.0.2:81/")}
    origin = httpx.URL("https://api.example.com/v1/chat")
    for target, kept in [
        ("https://stream.example.com:443/s/1", ALL),
        ("http://stream.example.com/s/1", STRIPPED),  # the scheme is part of the origin
        ("http://10.0.0.2:81/s", ALL),
        ("http://10.0.0.2/s", STRIPPED),
    ]:
        assert headers_for(origin, httpx.URL(target), ALL, trusted) == kept, target


URL_POOL = [
    "http://a.example/x",
    "HTTP://A.example:80/y?q",
    "http://a.example:8080/",
    "https://a.example/",
    "https://a.example:443/z",
    "http://b.example/x",
    "http://127.0.0.1:80/",
    "http://127.0.0.1/",
    "http://[::1]/",
]
NAMES = ["Authorization", "cookie", "PROXY-AUTHORIZATION", "Host", "X-Key", "Accept", "cookies"]


@given(
    origin=st.sampled_from(URL_POOL),
    target=st.sampled_from(URL_POOL),
    headers=st.dictionaries(
        st.sampled_from(NAMES).flatmap(
            lambda n: st.sampled_from([n, n.lower(), n.upper(), n.title()])
        ),
        st.text(max_size=3),
    ),
)
def test_headers_for_property(origin: str, target: str, headers: dict[str, str]) -> None:
    a, b = httpx.URL(origin), httpx.URL(target)
    out = headers_for(a, b, headers)
    same = (a.scheme, a.host, a.port or {"http": 80}.get(a.scheme, 443)) == (
        b.scheme,
        b.host,
        b.port or {"http": 80}.get(b.scheme, 443),
    )
    assert out == (
        headers
        if same
        else {k: v for k, v in headers.items() if k.lower() not in {*CREDENTIAL_HEADERS, "host"}}
    )


@pytest.mark.parametrize(
    "value",
    ["stream.example.com", "ftp://a", "https://", "https://u:p@a", "https://a/path", "https://a?q"],
)
def test_trusted_origins_must_be_origins(value: str) -> None:
    with pytest.raises(ValueError, match="trusted origin"):
        parse_origin(value)
    with pytest.raises(ValueError, match="trusted origin"):
        EventSource("http://127.0.0.1:1/", trusted_origins=[value])


def test_trusted_origins_is_a_list() -> None:
    with pytest.raises(ValueError, match="a list of origins, not one string"):
        EventSource("http://127.0.0.1:1/", trusted_origins="https://a.example")


REQUEST_URL = httpx.URL("http://127.0.0.1:8000/v1/chat/completions?x=1")


@pytest.mark.parametrize(
    ("ref", "resolved"),
    [
        ("/v1/streams/7f?format=openai", "http://127.0.0.1:8000/v1/streams/7f?format=openai"),
        ("streams/7f", "http://127.0.0.1:8000/v1/chat/streams/7f"),
        ("?resume=1", "http://127.0.0.1:8000/v1/chat/completions?resume=1"),
        ("//127.0.0.1:8001/s/1", "http://127.0.0.1:8001/s/1"),
        ("https://other.example/s/1", "https://other.example/s/1"),
        ("http://user:pw@other.example/s/1", "http://other.example/s/1"),
        ("//user:pw@127.0.0.1:8000/s/1", "http://127.0.0.1:8000/s/1"),
    ],
)
def test_links_resolve_against_the_request_url_without_their_userinfo(
    ref: str, resolved: str
) -> None:
    assert str(resolve(REQUEST_URL, ref)) == resolved


@pytest.mark.parametrize(
    "ref", ["javascript:alert(1)", "file:///etc/passwd", "mailto:a@b", "ws://a/b"]
)
def test_links_that_are_not_http_are_refused(ref: str) -> None:
    with pytest.raises(ValueError, match="not"):
        resolve(REQUEST_URL, ref)


def _source(url: str = "http://u:pw@api.example.com/v1/chat", **kwargs: Any) -> EventSource:
    return EventSource(
        url, method="POST", json={"q": 1}, headers={**SECRETS, **PLAIN}, sleep=_no_sleep, **kwargs
    )


RESUME_HEADERS = {
    **PLAIN,
    "Accept": "text/event-stream",
    "Cache-Control": "no-cache",
    "Last-Event-ID": "4",
}


def _sent(req: Request) -> tuple[str, str, bytes | None, bool]:
    return (req.method, str(req.url), req.content, req.credentials)


def test_resume_on_another_origin_goes_without_credentials() -> None:
    es = _source(last_event_id="4")
    es._events_url = resolve(es.url, "https://streams.example.net/s/1")
    req = es._next_request()
    assert _sent(req) == ("GET", "https://streams.example.net/s/1", None, False)
    assert req.headers == RESUME_HEADERS
    es.close()


def test_resume_on_the_same_origin_keeps_credentials_and_userinfo() -> None:
    es = _source(last_event_id="4")
    es._events_url = resolve(httpx.URL("http://u:pw@api.example.com/v1/chat"), "/s/1")
    req = es._next_request()
    assert (req.method, req.url, req.credentials) == (
        "GET",
        httpx.URL("http://u:pw@api.example.com/s/1"),
        True,
    )
    assert req.headers == {**SECRETS, **RESUME_HEADERS}
    es.close()


def test_resume_on_a_trusted_origin_keeps_credentials() -> None:
    es = _source(last_event_id="4", trusted_origins=["https://streams.example.net"])
    es._events_url = resolve(es.url, "https://streams.example.net/s/1")
    req = es._next_request()
    assert (str(req.url), req.credentials) == ("https://u:pw@streams.example.net/s/1", True)
    assert req.headers == {**SECRETS, **RESUME_HEADERS}
    es.close()


def test_httpx_client_credentials_are_not_added_for_another_origin() -> None:
    client = httpx.Client(
        auth=("user", "pw"),
        cookies={"jar": "j1"},
        headers={"Authorization": "Bearer client-default", "X-Client": "c"},
    )
    es = EventSource("http://api.example.com/v1/chat", method="POST", client=client)
    first, auth = es._build(client)
    assert auth is client.auth
    assert first.headers["authorization"] == "Bearer client-default"
    assert first.headers["cookie"] == "jar=j1"
    es._events_url = httpx.URL("http://other.example.com/s/1")
    resume, auth = es._build(client)
    assert auth is None
    assert dict(resume.headers) == {
        "host": "other.example.com",
        "accept-encoding": "gzip, deflate",
        "connection": "keep-alive",
        "user-agent": f"python-httpx/{httpx.__version__}",
        "x-client": "c",
        "accept": "text/event-stream",
        "cache-control": "no-cache",
    }
    es.close()
    client.close()


def _redirect(es: EventSource, status: int, location: str) -> str:
    """Answer the request ``es`` sent last with a redirect; return its verdict."""
    request = httpx.Request(es._request.method, es._request.url)
    return es._accept(httpx.Response(status, headers={"location": location}, request=request))


def test_redirects_apply_the_same_decision_at_every_hop() -> None:
    es = _source()
    es._next_request()
    assert _redirect(es, 307, "https://elsewhere.example/v2") == "redirect"
    req = es._next_request()
    assert _sent(req) == ("POST", "https://elsewhere.example/v2", b'{"q":1}', False)
    assert req.headers == {
        **PLAIN,
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Cache-Control": "no-cache",
    }
    # a relative Location resolves against the hop, not the caller's URL
    assert _redirect(es, 308, "/v3") == "redirect"
    req = es._next_request()
    assert _sent(req) == ("POST", "https://elsewhere.example/v3", b'{"q":1}', False)
    # back on the caller's origin, the credentials are the caller's again
    assert _redirect(es, 303, "http://api.example.com/v1/answer") == "redirect"
    req = es._next_request()
    assert _sent(req) == ("GET", "http://u:pw@api.example.com/v1/answer", None, True)
    assert req.headers == {
        **SECRETS,
        **PLAIN,
        "Accept": "text/event-stream",
        "Cache-Control": "no-cache",
    }
    assert es._hops == 3
    # the next request of our own (a reconnect) starts from the caller's URL again
    req = es._next_request()
    assert _sent(req) == ("POST", "http://u:pw@api.example.com/v1/chat", b'{"q":1}', True)
    assert es._hops == 0
    es.close()


def test_too_many_redirects_and_bad_locations_are_errors() -> None:
    es = _source("http://api.example.com/loop")
    for _ in range(20):
        es._next_request()
        assert _redirect(es, 302, "/loop") == "redirect"
    es._next_request()
    assert _redirect(es, 302, "/loop") == "error"
    response = httpx.Response(302, headers={"location": "/loop"}, request=httpx.Request("GET", "/"))
    assert str(es._response_error(response, b"")).endswith("(gave up after 20 redirects)")
    es.close()
    es = _source("http://api.example.com/")
    es._next_request()
    assert _redirect(es, 301, "javascript:alert(1)") == "error"
    response = httpx.Response(
        301, headers={"location": "javascript:alert(1)"}, request=httpx.Request("GET", "/")
    )
    assert str(es._response_error(response, b"")).endswith(
        "(cannot follow Location 'javascript:alert(1)')"
    )
    es.close()


# -- two real servers ----------------------------------------------------------


BLOCKS = (
    b"retry: 0\nid: 1\ndata: a\n\n",
    b"id: 2\ndata: b\n\n",
    b"id: 3\ndata: c\n\n",
    b"id: 4\ndata: d\n\n",
)
EVENTS = [Event("a", id="1", retry=0), Event("b", id="2"), Event("c", id="3"), Event("d", id="4")]


def _dropped_post(script: MakeScript, resume_at: Script, *, cookie: bool = True) -> Script:
    """A POST stream that names ``resume_at`` as its events URL and drops after two events."""
    headers = {"X-Stream-Id": "st-1", "Link": f'<{resume_at.url}/events>; rel="events"'}
    if cookie:
        headers["Set-Cookie"] = "jar=from-a; Path=/"
    return script([Stream([BLOCKS[0], BLOCKS[1]], end="drop", headers=headers)])


def _credentials(seen: Seen) -> dict[str, str]:
    return {k: v for k, v in seen.headers.items() if k in CREDENTIAL_HEADERS}


def _run(mode: str, url: str, **kwargs: Any) -> Outcome:
    policy = ReconnectPolicy(jitter=0.0, max_retries=3)
    return run(mode, url, method="POST", json={"q": "hi"}, policy=policy, **kwargs)


SENT = {"authorization": "Bearer sk-secret", "proxy-authorization": "Basic cHJveHk6cHc="}


@pytest.mark.parametrize("mode", MODES)
def test_resume_on_another_server_sends_no_credentials(
    mode: str, script: MakeScript, elsewhere: MakeScript
) -> None:
    b = elsewhere([Resume(BLOCKS)])
    a = _dropped_post(script, b)
    headers = {"Authorization": SENT["authorization"], "Proxy-Authorization": "Basic cHJveHk6cHc="}
    out = _run(mode, a.url, headers={**headers, "X-Trace": "t-1"})
    assert out.error is None
    assert out.events == EVENTS  # nothing lost, nothing repeated
    assert [(s.method, s.body) for s in a.seen] == [("POST", b'{"q":"hi"}')]
    assert _credentials(a.seen[0]) == SENT
    assert [(s.method, s.path, s.last_event_id) for s in b.seen] == [
        ("GET", b.path + "/events", "2"),
        ("GET", b.path + "/events", "4"),  # 204: the stream is over
    ]
    for seen in b.seen:
        assert _credentials(seen) == {}  # nor the cookie server A set
        assert seen.headers["x-trace"] == "t-1"
        assert seen.headers["host"] == b.url.split("/")[2]


@pytest.mark.parametrize("mode", MODES)
def test_resume_on_the_same_server_keeps_credentials(mode: str, script: MakeScript) -> None:
    resume = script([Resume(BLOCKS)])
    a = _dropped_post(script, resume)
    out = _run(mode, a.url, headers={"Authorization": SENT["authorization"]})
    assert out.error is None
    assert out.events == EVENTS
    assert _credentials(a.seen[0]) == {"authorization": SENT["authorization"]}
    jar = {"authorization": SENT["authorization"], "cookie": "jar=from-a"}
    assert [(s.last_event_id, _credentials(s)) for s in resume.seen] == [("2", jar), ("4", jar)]


@pytest.mark.parametrize("mode", MODES)
def test_resume_on_a_trusted_server_keeps_credentials(
    mode: str, script: MakeScript, elsewhere: MakeScript
) -> None:
    b = elsewhere([Resume(BLOCKS)])
    a = _dropped_post(script, b, cookie=False)
    origin = "/".join(b.url.split("/")[:3])
    out = _run(mode, a.url, headers={"Authorization": "Bearer k"}, trusted_origins=[origin])
    assert out.events == EVENTS
    assert [_credentials(s) for s in b.seen] == [{"authorization": "Bearer k"}] * 2


#: ``httpx`` client settings that add credentials of their own.
CLIENT_SETTINGS: dict[str, Any] = {
    "auth": ("user", "pw"),
    "cookies": {"jar": "j1"},
    "headers": {"Proxy-Authorization": "Basic cHJveHk6cHc="},
}


BASIC = "Basic dXNlcjpwdw=="  # user:pw


@pytest.mark.parametrize("mode", MODES)
def test_the_httpx_clients_own_credentials_stay_home(
    mode: str, script: MakeScript, elsewhere: MakeScript
) -> None:
    b = elsewhere([Resume(BLOCKS)])
    a = _dropped_post(script, b, cookie=False)
    out = _run(mode, a.url, httpx_client=CLIENT_SETTINGS)
    assert out.events == EVENTS
    assert _credentials(a.seen[0]) == {
        "authorization": BASIC,
        "cookie": "jar=j1",
        "proxy-authorization": "Basic cHJveHk6cHc=",
    }
    assert [_credentials(s) for s in b.seen] == [{}, {}]


@pytest.mark.parametrize("mode", MODES)
def test_a_redirect_to_another_server_sends_no_credentials(
    mode: str, script: MakeScript, elsewhere: MakeScript
) -> None:
    b = elsewhere([Stream([b"data: there\n\n"]), Reply(204)])
    a = script([Reply(307, b"", {"location": b.url + "/answer", "set-cookie": "jar=a; Path=/"})])
    out = _run(mode, a.url, headers={**SECRETS, "X-Trace": "t-1"})
    assert out.events == [Event("there", id="")]
    assert _credentials(a.seen[0]) == {k.lower(): v for k, v in SECRETS.items()}
    # 307 keeps the method and the body; the reconnect starts from the caller's URL
    assert [(s.method, s.path, s.body) for s in b.seen] == [
        ("POST", b.path + "/answer", b'{"q":"hi"}'),
    ]
    assert _credentials(b.seen[0]) == {}
    assert b.seen[0].headers["x-trace"] == "t-1"


@pytest.mark.parametrize("mode", MODES)
def test_a_redirect_on_the_same_server_keeps_credentials(mode: str, script: MakeScript) -> None:
    target = script([Stream([b"data: here\n\n"])])
    a = script([Reply(303, b"", {"location": target.path})])
    out = _run(mode, a.url, headers={"Authorization": "Bearer k"}, reconnect=False)
    assert out.events == [Event("here", id="")]
    assert [(s.method, s.body, _credentials(s)) for s in target.seen] == [
        ("GET", b"", {"authorization": "Bearer k"})
    ]


def test_a_401_elsewhere_says_why(script: MakeScript, elsewhere: MakeScript) -> None:
    b = elsewhere([Reply(401, b"who are you?")])
    a = _dropped_post(script, b, cookie=False)
    out = _run("sync", a.url, headers={"Authorization": "Bearer k"})
    assert out.events == EVENTS[:2]
    assert isinstance(out.error, ResponseError)
    assert out.error.status == 401
    origin_a = "/".join(a.url.split("/")[:3])
    origin_b = "/".join(b.url.split("/")[:3])
    assert str(out.error) == (
        f"GET {b.url}/events answered 401 Unauthorized instead of an event stream: who are you?"
        f" (the request's credentials stay with {origin_a} and were not sent to {origin_b};"
        " trusted_origins= allows that origin)"
    )


def test_listen_inherits_it(script: MakeScript, elsewhere: MakeScript) -> None:
    from typer.testing import CliRunner

    from ssegate.cli import app

    b = elsewhere([Resume(BLOCKS)])
    a = _dropped_post(script, b)
    result = CliRunner().invoke(
        app,
        ["listen", a.url, "-d", '{"q": 1}', "-H", "Authorization: Bearer k", "--no-timestamps"],
    )
    assert result.exit_code == 0, result.output
    lines = [f"message id={i}\n{d}\n" for i, d in enumerate("abcd", 1)]
    assert result.stdout == "".join(lines).replace("id=1", "id=1 retry=0", 1)
    assert _credentials(a.seen[0]) == {"authorization": "Bearer k"}
    assert [(s.last_event_id, _credentials(s)) for s in b.seen] == [("2", {}), ("4", {})]
