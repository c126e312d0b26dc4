"""A provider served over HTTPS by a private CA: the gateway verifies its
certificate, and trusts that CA when ``SSL_CERT_FILE`` names it (as deployments
behind a corporate CA, and ``benchmarks/gateway.py``, do); never unverified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from gateway_support import provider

from ssegate.testing import FakeUpstream, Reply

CAPTURES = Path(__file__).parent.parent / "llm" / "captures"
BODY = {"model": "fake/m1", "messages": [{"role": "user", "content": "Say bonjour"}]}


@pytest.fixture
def https_upstream(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A FakeUpstream on https://127.0.0.1 (a trustme CA's certificate); yields its
    base URL and the CA's file."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = (str(tmp_path / n) for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(certfile)
    cert.private_key_pem.write_to_path(keyfile)
    ca.cert_pem.write_to_path(cafile)
    fake = FakeUpstream()
    fake.add("/v1/chat/completions", Reply.load(CAPTURES / "openai_text.http"))
    with fake.run(ssl_certfile=certfile, ssl_keyfile=keyfile) as url:
        yield url.replace("http://", "https://"), cafile


def test_a_provider_behind_a_private_ca_trusted_by_ssl_cert_file(  # type: ignore[no-untyped-def]
    gateway, https_upstream, monkeypatch
) -> None:
    url, cafile = https_upstream
    monkeypatch.setenv("SSL_CERT_FILE", cafile)
    with gateway(**provider(url)) as server:
        answer = httpx.post(server.url + "/v1/chat/completions", json=BODY)
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "Bonjour été ✓"


def test_an_untrusted_provider_certificate_is_refused(  # type: ignore[no-untyped-def]
    gateway, https_upstream, monkeypatch
) -> None:
    url, _ = https_upstream
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with gateway(**provider(url)) as server:
        answer = httpx.post(server.url + "/v1/chat/completions", json=BODY)
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "upstream_error")
    assert error["message"].startswith(f"The provider refused: could not reach openai at {url}")
    assert "CERTIFICATE_VERIFY_FAILED" in error["message"]
