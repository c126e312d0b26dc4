"""The package's shape: its public names, and what each layer may import."""

from __future__ import annotations

import json
import subprocess
import sys

import ssegate

PUBLIC = [
    "AsyncEventSource",
    "AuthenticationError",
    "BadRequestError",
    "Decoder",
    "Event",
    "EventSource",
    "EventSourceResponse",
    "NDJSONDecoder",
    "NotResumableError",
    "ProtocolError",
    "ProviderError",
    "RateLimitError",
    "ReadTimeout",
    "ReconnectPolicy",
    "ResponseError",
    "RetriesExhausted",
    "SSEGateError",
    "StoreUnavailable",
    "StreamEnded",
    "StreamError",
    "StreamNotFound",
    "TransportError",
    "UnknownEventId",
    "UpstreamUnavailable",
    "__version__",
    "encode",
    "encode_comment",
    "encode_retry",
]


def test_all_is_pinned_sorted_and_resolves() -> None:
    assert ssegate.__all__ == PUBLIC
    assert sorted(ssegate.__all__) == ssegate.__all__
    for name in ssegate.__all__:
        assert getattr(ssegate, name) is not None


def test_exceptions_share_one_root() -> None:
    for name in ssegate.__all__:
        value = getattr(ssegate, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, ssegate.SSEGateError)


def imported_modules(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out))


def test_protocol_imports_only_the_standard_library() -> None:
    mods = imported_modules("import ssegate.protocol")
    ours = {m for m in mods if m == "ssegate" or m.startswith("ssegate.")}
    assert ours <= {
        "ssegate",
        "ssegate._exceptions",
        "ssegate.protocol",
        "ssegate.protocol._decoder",
        "ssegate.protocol._encoder",
        "ssegate.protocol._event",
        "ssegate.protocol._ndjson",
        "ssegate.protocol._reconnect",
    }
    stdlib = set(sys.stdlib_module_names)
    foreign = {m for m in mods - ours if m.split(".")[0] not in stdlib}
    # The interpreter itself may preload a few site hooks; none may be a library.
    assert not {m for m in foreign if not m.startswith("_")}, foreign


def test_import_ssegate_stays_light() -> None:
    mods = imported_modules("import ssegate")
    heavy = {"httpx", "starlette", "anyio", "redis", "numpy", "uvicorn", "typer"}
    assert not heavy & {m.split(".")[0] for m in mods}
