"""``ssegate chat``: the embedded model in a real subprocess, a remote one replayed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssegate.cli import app
from ssegate.testing import FakeUpstream, Reply

SSEGATE = Path(sys.executable).parent / "ssegate"


def test_chat_with_the_embedded_model_in_a_subprocess(model_path: str) -> None:
    done = subprocess.run(
        [
            str(SSEGATE),
            "chat",
            "What is the capital of France?",
            *("--temperature", "0", "--max-tokens", "16", "--n-ctx", "256", "--stats"),
        ],
        capture_output=True,
        timeout=90,
        check=False,
        text=True,
        env={"PATH": str(SSEGATE.parent), "SSEGATE_ENGINE": "numpy"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "The capital of France is Paris.\n"
    stats = json.loads(done.stderr.strip().splitlines()[-1])
    assert set(stats) == {"ttft_s", "tokens", "tokens_per_s", "load_s", "model", "finish_reason"}
    assert (stats["tokens"], stats["model"], stats["finish_reason"]) == (7, "local", "stop")
    assert stats["ttft_s"] > 0
    assert stats["tokens_per_s"] > 0
    assert stats["load_s"] > 0


def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1763769600,
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


# OpenAI's documented streaming format (role first, content deltas, finish, usage, [DONE])
OPENAI_ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
    + chunk({"role": "assistant", "content": ""})
    + chunk({"content": "Hello"})
    + chunk({"content": " there!"})
    + chunk({}, "stop")
    + b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1763769600,'
    b'"model":"gpt-test","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,'
    b'"total_tokens":11}}\n\n' + b"data: [DONE]\n\n"
)
OPENAI_401 = (
    b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\r\n"
    b'{"error":{"message":"Incorrect API key provided","type":"invalid_request_error",'
    b'"param":null,"code":"invalid_api_key"}}'
)


def test_chat_with_a_remote_provider() -> None:
    upstream = FakeUpstream()
    upstream.add("/ok/v1/chat/completions", Reply.from_http(OPENAI_ANSWER))
    upstream.add("/bad/v1/chat/completions", Reply.from_http(OPENAI_401))
    runner = CliRunner()
    with upstream.run() as url:
        result = runner.invoke(
            app,
            [
                *("chat", "hi", "--model", "openai:gpt-test", "--base-url", f"{url}/ok/v1"),
                *("--system", "Be brief.", "--max-tokens", "5", "--stats"),
            ],
            env={"SSEGATE_API_KEY": "sk-test"},
        )
        assert result.exit_code == 0, result.stderr
        assert result.stdout == "Hello there!\n"
        stats = json.loads(result.stderr.strip().splitlines()[-1])
        assert (stats["tokens"], stats["load_s"], stats["finish_reason"]) == (2, 0.0, "stop")
        sent = upstream.requests[0]
        assert sent.headers["authorization"] == "Bearer sk-test"
        body = sent.json()
        assert body["model"] == "gpt-test"
        assert body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ]
        assert body["stream"] is True

        refused = runner.invoke(
            app, ["chat", "hi", "-m", "openai:gpt-test", "--base-url", f"{url}/bad/v1"]
        )
        assert refused.exit_code == 3
        assert refused.stdout == ""
        assert "error:" in refused.stderr
        assert "Incorrect API key provided" in refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "gpt-4"], "use 'local', a .gguf path, or PROVIDER:MODEL"),
        (["--model", "nosuch:model"], "use 'local', a .gguf path, or PROVIDER:MODEL"),
        (["--model", "/no/such/file.gguf"], "no GGUF file at /no/such/file.gguf"),
        (["--engine", "torch"], "use numpy, llamacpp or auto"),
        (["--max-tokens", "0"], "Invalid value for '--max-tokens'"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["chat", "hi", *args])
    assert result.exit_code == 2
    assert message in " ".join(re.sub("[│╭╮╰╯─]", " ", result.stderr).split())  # unbox
