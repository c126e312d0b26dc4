"""TLS trust and proxies of the client an ``EventSource`` makes for itself: the
same defaults as the providers' path (``ssegate._http.default_ssl_context``)."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from http_support import ConnectProxy, RawServer, make_certificate
from ssegate import AsyncEventSource, Event, EventSource, TransportError
from ssegate.testing import FakeUpstream, Reply

_STREAM = Reply(
    200,
    (("content-type", "text/event-stream"),),
    (b"id: 1\ndata: one\n\n", b"data: two\n\nevent: done\ndata: end\n\n"),
)
_EVENTS = [Event("one", id="1"), Event("two", id="1"), Event("end", "done", "1")]

_PROXY_VARS = ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
               "ALL_PROXY", "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR")  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _collect(kind: str, url: str, **options: object) -> list[Event]:
    """The events of one connection, read with ``EventSource`` or ``AsyncEventSource``."""
    if kind == "sync":
        with EventSource(url, reconnect=False, **options) as source:  # type: ignore[arg-type]
            return list(source)

    async def read() -> list[Event]:
        async with AsyncEventSource(url, reconnect=False, **options) as source:  # type: ignore[arg-type]
            return [event async for event in source]

    return anyio.run(read)


KINDS = pytest.mark.parametrize("kind", ["sync", "async"])


@KINDS
def test_the_ca_from_ssl_cert_file_is_trusted(
    kind: str, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    key, cert = make_certificate(tmp_path)
    fake = FakeUpstream().add("/events", _STREAM)
    with fake.run(ssl_keyfile=key, ssl_certfile=cert) as url:
        https = url.replace("http://", "https://") + "/events"
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            _collect(kind, https)  # the system store does not know this CA
        clean_env.setenv("SSL_CERT_FILE", cert)
        assert _collect(kind, https) == _EVENTS
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            _collect(kind, https, trust_env=False)  # SSL_CERT_FILE ignored
    assert len(fake.requests) == 1


@KINDS
def test_a_wrong_hostname_is_refused(
    kind: str, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    key, cert = make_certificate(tmp_path, san="DNS:api.example.test")
    clean_env.setenv("SSL_CERT_FILE", cert)  # the CA is trusted...
    fake = FakeUpstream().add("/events", _STREAM)
    with fake.run(ssl_keyfile=key, ssl_certfile=cert) as url:
        https = url.replace("http://", "https://") + "/events"
        with pytest.raises(TransportError, match=r"(?i)mismatch|doesn't match|not valid for"):
            _collect(kind, https)  # ...the name is not
    assert fake.requests == []


@KINDS
def test_https_proxy_from_the_environment_is_used(
    kind: str, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    key, cert = make_certificate(tmp_path)
    fake = FakeUpstream().add("/events", _STREAM)
    proxy = ConnectProxy()
    with fake.run(ssl_keyfile=key, ssl_certfile=cert) as url, RawServer(proxy.handle).run() as p:
        https = url.replace("http://", "https://") + "/events"
        clean_env.setenv("HTTPS_PROXY", p)
        clean_env.setenv("SSL_CERT_FILE", cert)
        assert _collect(kind, https) == _EVENTS
        assert proxy.targets == [f"CONNECT {url.removeprefix('http://')}"]
        # trust_env=False: no proxy (and no SSL_CERT_FILE, so this CA is unknown)
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            _collect(kind, https, trust_env=False)
        clean_env.setenv("NO_PROXY", "localhost,127.0.0.1")
        assert _collect(kind, https) == _EVENTS
    assert len(proxy.targets) == 1  # the others went around the proxy
    assert len(fake.requests) == 2


def test_trust_env_false_with_an_own_client_is_refused() -> None:
    with httpx.Client() as own, pytest.raises(ValueError, match="set trust_env"):
        EventSource("http://127.0.0.1:1/", client=own, trust_env=False)
