"""``ssegate serve`` and ``ssegate publish``: the refusals before binding, a real
``ssegate serve`` process answering the openai SDK, publishing from the CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import openai
import pytest
from typer.testing import CliRunner

from serve_support import free_port, ssegate_serve
from ssegate.cli import app
from ssegate.cli._serve import BACKLOG

runner = CliRunner()


def test_serve_refuses_a_public_address_without_keys() -> None:
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0"], env={})
    assert result.exit_code == 2
    assert "refusing to serve 0.0.0.0 with no API keys" in result.stderr
    assert "--allow-public-without-auth" in result.stderr


def test_serve_workers_need_redis() -> None:
    result = runner.invoke(app, ["serve", "--workers", "2"], env={"SSEGATE_WORKERS": ""})
    assert result.exit_code == 2
    assert "--workers 2 needs Redis" in result.stderr
    assert "--redis-url redis://" in result.stderr


def test_serve_names_the_bad_field_of_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('default_model = "echo"\n[limits]\nmax_body_bytes = "big"\n')
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert f"invalid configuration in {config}:" in result.stderr
    assert "limits.max_body_bytes: Input should be a valid integer" in result.stderr


def test_serve_says_when_redis_is_unreachable() -> None:
    port = free_port()
    result = runner.invoke(app, ["serve", "--redis-url", f"redis://:secret@127.0.0.1:{port}/0"])
    assert result.exit_code == 1
    assert f"cannot reach Redis at redis://***@127.0.0.1:{port}/0" in result.stderr
    assert "secret" not in result.stderr


def test_a_real_ssegate_serve_process(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        'default_model = "echo"\necho_tokens_per_second = 0\n[local]\npreload = false\n'
    )
    with ssegate_serve(str(config), output=subprocess.PIPE) as (base, process):
        assert listen_queue(int(base.rpartition(":")[2])) == min(BACKLOG, somaxconn())
        sdk = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        chunks = sdk.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "over the wire"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "over the wire"
        published = runner.invoke(app, ["publish", "news", '{"a": 1}', "--url", base])
        assert published.exit_code == 0, published.output
        event_id = published.stdout.strip()
        with httpx.stream(
            "GET", base + "/v1/topics/news", params={"last_event_id": ""}
        ) as response:
            lines = response.iter_lines()
            assert [next(lines) for _ in range(3)] == [
                "retry: 1000",
                f"id: {event_id}",
                'data: {"a": 1}',
            ]
    output, _ = process.communicate(timeout=30)
    text = output.decode()
    assert f"API {base}/v1  docs {base}/docs" in text
    assert '"model":"echo","key":"anonymous"' in text  # the stream's log line
    assert process.returncode == 0


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789"])
def test_publish_refused_says_why(gateway, key: str | None) -> None:  # type: ignore[no-untyped-def]
    keys = [{"id": "p", "key": "publish-key-0123456789", "scopes": ["publish"]}]
    with gateway(keys=keys) as server:
        args = ["publish", "news", "x", "--url", server.url]
        if key:
            args += ["--api-key", key]
        result = runner.invoke(app, args)
        ok = runner.invoke(app, [*args[:5], "--api-key", "publish-key-0123456789", "-e", "n"])
    assert result.exit_code == 1
    assert result.stderr.startswith("ssegate publish: 401: ")
    assert ok.exit_code == 0
    assert ok.stdout.strip().endswith("-000000000001")


def somaxconn() -> int:
    """The kernel's cap on a listen queue (Linux)."""
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


def listen_queue(port: int) -> int:
    """The listen queue of the socket listening on ``port``, as the kernel has it
    (``ss``: a listening socket's Send-Q is its backlog)."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[2])
