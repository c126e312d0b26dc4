"""Keys from each provider's conventional variable (its own server only); token caps per vendor."""

from __future__ import annotations

import pytest

from ssegate import AuthenticationError
from ssegate.llm import ChatRequest
from ssegate.llm.providers import create_provider

REQUEST = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=5)

#: provider -> (its variable, the header that carries the key, how)
KEYED = {
    "openai": ("OPENAI_API_KEY", "authorization", "Bearer {}"),
    "deepseek": ("DEEPSEEK_API_KEY", "authorization", "Bearer {}"),
    "glm": ("ZHIPUAI_API_KEY", "authorization", "Bearer {}"),
    "zhipu": ("ZHIPUAI_API_KEY", "authorization", "Bearer {}"),
    "anthropic": ("ANTHROPIC_API_KEY", "x-api-key", "{}"),
}


def _clear(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, _, _ in KEYED.values():
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.parametrize("name", sorted(KEYED))
def test_the_key_comes_from_the_providers_variable(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear(monkeypatch)
    variable, header, form = KEYED[name]
    monkeypatch.setenv(variable, "key.from-env")
    sent = create_provider(name).build_request(REQUEST)  # type: ignore[attr-defined]
    assert sent.headers[header] == form.format("key.from-env")
    given = create_provider(name, api_key="key.given").build_request(REQUEST)  # type: ignore[attr-defined]
    assert given.headers[header] == form.format("key.given")


@pytest.mark.parametrize("name", sorted(KEYED))
def test_a_missing_key_fails_before_sending_naming_the_variable(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear(monkeypatch)
    variable = KEYED[name][0]
    provider = create_provider(name)
    with pytest.raises(AuthenticationError) as missing:
        provider.build_request(REQUEST)  # type: ignore[attr-defined]
    assert (str(missing.value), missing.value.code, missing.value.provider) == (
        f"{name} needs an API key: set {variable} (or pass api_key, --api-key)",
        "missing_api_key",
        name,
    )


@pytest.mark.parametrize("name", sorted(KEYED))
def test_a_key_from_the_environment_never_goes_to_another_server(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    variable, header, _ = KEYED[name]
    monkeypatch.setenv(variable, "key.from-env")
    provider = create_provider(name, base_url="http://127.0.0.1:8080/v1")
    sent = provider.build_request(REQUEST)  # type: ignore[attr-defined]
    assert header not in sent.headers


def test_max_completion_tokens_goes_to_openai_itself_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk")
    elsewhere = {"base_url": "http://127.0.0.1:8080/v1"}
    cases = {
        "openai": {},
        "openai at another URL": elsewhere,
        "deepseek": {"api_key": "k"},
        "glm": {"api_key": "k"},
        "vllm": {},
        "llamacpp": {},
        "lmstudio": {},
        "openai-compatible": elsewhere,
        "anthropic": {"api_key": "k"},
    }
    fields = {}
    for case, options in cases.items():
        body = create_provider(case.split()[0], **options).build_request(REQUEST).json()  # type: ignore[attr-defined]
        fields[case] = {k: v for k, v in body.items() if "tokens" in k}
    assert fields == {
        "openai": {"max_completion_tokens": 5},
        "openai at another URL": {"max_tokens": 5},
        "deepseek": {"max_tokens": 5},
        "glm": {"max_tokens": 5},
        "vllm": {"max_tokens": 5},
        "llamacpp": {"max_tokens": 5},
        "lmstudio": {"max_tokens": 5},
        "openai-compatible": {"max_tokens": 5},
        "anthropic": {"max_tokens": 5},
    }
    ollama = create_provider("ollama").build_request(REQUEST).json()  # type: ignore[attr-defined]
    assert ollama["options"] == {"num_predict": 5}
