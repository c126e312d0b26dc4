"""A key sent as ``?access_token=`` (what a browser's EventSource must do) reaches
no log and no metric: checked on the output of a real ``ssegate serve`` process
(uvicorn's access log on), valid and invalid tokens, spelled plainly or
percent-encoded, on routes that exist and routes that do not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
from gateway_support import ssegate_serve

KEY = "Tok3nValueThatMustNotLeak0001"
WRONG = "Wr0ngTokenThatMustNotLeak0002"


def test_query_tokens_reach_no_log_and_no_metric(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        'default_model = "echo"\necho_tokens_per_second = 0\n[local]\npreload = false\n'
        f'[[keys]]\nid = "web"\nkey = "{KEY}"\nscopes = ["chat", "publish", "subscribe:*"]\n'
    )
    with ssegate_serve(str(config), output=subprocess.PIPE) as (base, process):
        auth = {"authorization": f"Bearer {KEY}"}
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        stream = httpx.post(base + "/v1/streams", json=body, headers=auth).json()["id"]
        statuses = []
        for token in (KEY, WRONG):
            for name in ("access_token", "access%5Ftoken", "%61ccess_token"):
                for path in (f"/v1/streams/{stream}", "/v1/topics/news", "/v1/nowhere"):
                    url = f"{base}{path}?format=native&{name}={token}&last_event_id=x"
                    response = httpx.get(url, timeout=10)
                    statuses.append(response.status_code)
                    assert token not in response.text
                    assert all(token not in value for value in response.headers.values())
        metrics = httpx.get(base + "/metrics").text
    output, _ = process.communicate(timeout=30)
    log = output.decode()
    # The valid key was used (400: "x" is no id of the stream; 404: no route),
    # the wrong one refused (401), and the access log did run.
    assert statuses == [400, 400, 404] * 3 + [401, 401, 404] * 3
    assert f"GET /v1/streams/{stream}?format=native&last_event_id=x HTTP/1.1" in log
    assert KEY not in log
    assert WRONG not in log
    assert "access_token" not in log
    assert KEY not in metrics
    assert WRONG not in metrics
