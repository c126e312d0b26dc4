"""Settings: flags over environment over the TOML file; a bad value fails at load
naming its field; routes, keys and scopes checked before anything starts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ssegate.gateway import ConfigError, Settings, is_loopback, load_settings

TOML = """
port = 9000
default_model = "fast"
cors_origins = ["https://app.example.com"]

[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "UP_KEY"
models = ["m1"]

[aliases]
fast = "up/m1"

[[keys]]
id = "web"
key = "web-key-0123456789ab"
scopes = ["chat", "subscribe:prices/*"]

[limits]
max_body_bytes = 100
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(TOML)
    return path


def test_precedence_flags_env_file_defaults(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", "sk-from-env")
    monkeypatch.setenv("SSEGATE_PORT", "9001")
    monkeypatch.setenv("SSEGATE_LIMITS__MAX_STREAMS_PER_KEY", "3")
    monkeypatch.setenv("SSEGATE_KEEP_ALIVE", "5")
    settings = load_settings(config, keep_alive=7.0)
    assert settings.port == 9001  # environment over file
    assert settings.keep_alive == 7.0  # flag over environment
    assert settings.limits.max_body_bytes == 100  # file over default
    assert settings.limits.max_streams_per_key == 3  # nested environment, merged with the file
    assert settings.host == "127.0.0.1"  # default
    up = settings.providers["up"]
    assert up.api_key is not None
    assert up.api_key.get_secret_value() == "sk-from-env"
    assert "sk-from-env" not in repr(settings)
    assert "web-key" not in repr(settings)
    assert settings.route_error("fast") is None
    assert settings.route_error("up/anything") is None


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("port = 'x'", {}, "port: Input should be a valid integer"),
        ("colour = 'red'", {}, "colour: Extra inputs are not permitted"),
        ("store = 'postgres://x'", {}, "store: use 'memory' or a Redis URL"),
        ("default_model = 'gpt-4'", {}, "default_model: 'gpt-4' is not local, echo"),
        ("[aliases]\nfast = 'nowhere/m'", {}, "aliases.fast: 'nowhere/m' is not local"),
        ("[providers.x]\nkind = 'openia'", {}, "providers.x.kind: unknown provider kind 'openia'"),
        ("[providers.x]\nkind = 'openai'\nbase_url = 'ftp://h'", {}, "providers.x.base_url"),
        (
            "[providers.x]\nkind = 'openai'\napi_key_env = 'NOPE_UNSET'",
            {},
            "providers.x: api_key_env: the environment variable NOPE_UNSET is unset",
        ),
        ("[[keys]]\nid = 'a'\nkey = 'short'", {}, "keys.0: a key must be at least 16"),
        ("[[keys]]\nid = 'a'", {}, "keys.0: give the key as key or key_env"),
        (
            "[[keys]]\nid = 'a'\nkey = 'k-0123456789abcdef'\nscopes = ['admin']",
            {},
            "keys.0.scopes: unknown scope 'admin'",
        ),
        ("cors_origins = ['https://a.com/path']", {}, "cors_origins: an origin is"),
        ("", {"SSEGATE_LIMITS__MAX_BODY_BYTES": "0"}, "limits.max_body_bytes: Input should be"),
    ],
)
def test_bad_config_fails_at_load_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"invalid configuration in {path}:\n")
    assert message in str(info.value)


def test_unreadable_or_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(broken)


def test_defaults_read_nothing_implicitly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SSEGATE_PORT=1234\n")
    assert load_settings().port == 8000  # no .env file is read
    assert Settings.model_construct().default_model == "local"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("::", False)],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_gateway_package_pins_its_public_names() -> None:
    import ssegate.gateway

    assert ssegate.gateway.__all__ == [
        "BUILTIN_MODELS",
        "ConfigError",
        "EchoProvider",
        "KeySettings",
        "Limits",
        "LocalSettings",
        "ProviderSettings",
        "Settings",
        "create_app",
        "is_loopback",
        "load_settings",
    ]
    for name in ssegate.gateway.__all__:
        assert getattr(ssegate.gateway, name) is not None


def test_the_gateway_uses_only_public_names_of_other_packages() -> None:
    # ``from ..streams._sse import x`` or ``import _name`` from a sibling package
    # couples the gateway to another package's insides; its own modules, and the
    # package-wide _exceptions/_http/_extras/_entropy, are fine.
    source = Path(__file__).parents[2] / "src" / "ssegate" / "gateway"
    found = []
    for module in sorted(source.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level != 2 or node.module is None:
                continue
            if node.module in ("_exceptions", "_http", "_extras", "_entropy"):
                continue
            names = [alias.name for alias in node.names]
            if any(part.startswith("_") for part in node.module.split(".")) or any(
                name.startswith("_") for name in names
            ):
                found.append(f"{module.name}: from ..{node.module} import {', '.join(names)}")
    assert found == []
