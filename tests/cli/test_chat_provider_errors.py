"""``ssegate chat`` naming the provider as typed and the URL it tried, never a repr."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cli_support import ssegate

from ssegate.testing import FakeUpstream, Reply

NOT_FOUND = Reply(
    404,
    (("content-type", "application/json"),),
    (b'{"error":{"message":"model \'nope\' not found","type":"invalid_request_error"}}',),
)
LIMITED = Reply(
    429,
    (("content-type", "application/json"), ("retry-after", "20")),
    (b'{"error":{"message":"slow down","type":"rate_limit_exceeded"}}',),
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    fake = FakeUpstream()
    fake.add("/missing/v1/chat/completions", NOT_FOUND)
    fake.add("/limited/v1/chat/completions", LIMITED)
    with fake.run() as url:
        yield url


def test_an_error_names_the_provider_as_typed_and_the_url(upstream: str) -> None:
    base = f"http://user:secret@{upstream.removeprefix('http://')}/missing/v1?token=abc"
    done = ssegate("chat", "hi", "--model", "openai-compatible:nope", "--base-url", base)
    assert (done.code, done.stdout) == (3, "")
    assert done.stderr == (
        f"error: openai-compatible at {upstream}/missing/v1/chat/completions answered 404: "
        "model 'nope' not found\n"
    )


def test_a_rate_limit_shows_retry_after(upstream: str) -> None:
    done = ssegate("chat", "hi", "-m", "vllm:m", "--base-url", f"{upstream}/limited/v1")
    assert (done.code, done.stdout) == (3, "")
    assert done.stderr == (
        f"error: vllm at {upstream}/limited/v1/chat/completions answered 429: "
        "slow down (Retry-After: 20 s)\n"
    )


@pytest.mark.parametrize(
    ("model", "variable"),
    [
        ("openai:gpt-4o-mini", "OPENAI_API_KEY"),
        ("deepseek:deepseek-chat", "DEEPSEEK_API_KEY"),
        ("zhipu:glm-4.5", "ZHIPUAI_API_KEY"),
        ("anthropic:claude-sonnet-4-5", "ANTHROPIC_API_KEY"),
    ],
)
def test_no_key_fails_before_sending_naming_the_variable(model: str, variable: str) -> None:
    # The environment is empty (cli_support): nothing is sent, no network is needed.
    done = ssegate("chat", "hi", "--model", model)
    name = model.partition(":")[0]
    assert (done.code, done.stdout) == (3, "")
    assert done.stderr == (
        f"error: {name} needs an API key: set {variable} (or pass api_key, --api-key)\n"
    )
