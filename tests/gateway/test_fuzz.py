"""Every route of the gateway's OpenAPI schema, fuzzed by schemathesis against a real
gateway on 127.0.0.1: whatever the input, never a 500 and never a traceback; every
error is a JSON body in OpenAI's shape. Examples are bounded (the whole module runs
in well under 20 s). Again with auth on: each input with a valid key, with
none and with a wrong one."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import requests
import schemathesis
from gateway_support import settings as make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from json_values import CHAT_FIELDS, json_values
from ssegate.gateway import create_app
from ssegate.testing import serve


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(create_app(make_settings(keep_alive=60.0, default_model="echo"))) as server:
        yield server.url


# The schema the app serves at /openapi.json (built without serving anything).
schema = schemathesis.openapi.from_dict(create_app(make_settings()).openapi())


def _send(case: schemathesis.Case, base_url: str, headers: dict[str, str] | None = None) -> int:
    """Send ``case``; check what came back; its status."""
    # stream=True: a subscription is an endless event stream; its head is enough.
    kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
    with requests.request(**kwargs, stream=True, timeout=10) as response:
        status = response.status_code
        body = b"" if status < 300 else response.raw.read(64 * 1024)
    assert status < 500, (case.method, case.formatted_path, status, body[:500])
    assert b"Traceback" not in body
    if status >= 400 and status != 405:
        error = json.loads(body)["error"]
        assert set(error) >= {"message", "type", "code"}, body
        assert isinstance(error["message"], str)
        assert error["message"]
    if status == 200 and case.method == "GET" and "/v1/topics/" in case.formatted_path:
        assert response.headers["content-type"].startswith("text/event-stream")
    return status


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,  # the same inputs on every run: a failure is reproducible
    suppress_health_check=list(HealthCheck),
)
def test_no_input_makes_a_route_fail(base_url: str, case: schemathesis.Case) -> None:
    _send(case, base_url)


KEY = "fuzz-key-0123456789abcdef"
#: The routes anyone may call (the rest need a key: tests/gateway/test_auth.py).
OPEN = {"/healthz", "/readyz", "/metrics"}


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    keys = [{"id": "all", "key": KEY, "scopes": ["chat", "publish", "subscribe:*"]}]
    settings = make_settings(keys=keys, keep_alive=60.0, default_model="echo")
    with serve(create_app(settings)) as server:
        yield server.url


@schema.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_makes_a_route_fail_with_auth_on(keyed_url: str, case: schemathesis.Case) -> None:
    # The same inputs with a valid key, with none, and with a wrong one (as a
    # header, and as the query token of EventSource): never a 5xx; without a
    # valid key a guarded route says 401 before looking at the input.
    _send(case, keyed_url, {"Authorization": f"Bearer {KEY}"})
    guarded = case.path not in OPEN
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789ab"}):
        status = _send(case, keyed_url, headers)
        assert status == 401 or not guarded or status == 405, (case.formatted_path, status)
    case.query = {**(case.query or {}), "access_token": "wrong-key-0123456789ab"}
    status = _send(case, keyed_url)
    assert status == 401 or not guarded or status == 405, (case.formatted_path, status)


# "model" stays "echo": a model that exists, so the request gets past routing.
_FIELDS = [*(f for f in CHAT_FIELDS if f != "model"), "seed"]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(field=st.sampled_from(_FIELDS), value=json_values, path=st.sampled_from(["chat", "streams"]))
def test_any_value_in_any_field_of_a_chat_request(
    base_url: str, field: str, value: object, path: str
) -> None:
    # With a model that exists (schemathesis mostly finds unknown ones): the request
    # starts, or is a 422 naming the field, whatever the value.
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], field: value}
    url = base_url + ("/v1/chat/completions" if path == "chat" else "/v1/streams")
    # json.dumps, not httpx's json=: NaN and Infinity go out as Python writes them
    # (Python's JSON reader, under FastAPI, accepts them).
    content = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    response = httpx.post(url, content=content, headers=headers, timeout=10)
    if response.status_code == 422:
        error = response.json()["error"]
        assert str(error["param"]).startswith(field), error
    else:
        assert response.status_code == (200 if path == "chat" else 201), response.text
