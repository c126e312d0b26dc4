"""ssegate.streams: its public names, and what importing it pulls in."""

from __future__ import annotations

import json
import subprocess
import sys

import ssegate.streams

PUBLIC = [
    "CANCELLED",
    "DONE",
    "EPOCH_WIDTH",
    "ERROR",
    "FAILED",
    "ID_WIDTH",
    "Appender",
    "End",
    "EventId",
    "Gap",
    "Hub",
    "Lease",
    "LeaseKeeper",
    "MemoryStore",
    "RedisStore",
    "StreamInfo",
    "StreamItem",
    "StreamStore",
    "default_transform",
    "format_id",
    "hold_lease",
    "last_event_id",
    "parse_id",
    "stream_response",
]


def test_all_is_pinned_and_every_name_resolves() -> None:
    names = ssegate.streams.__all__
    assert names == PUBLIC  # constants, classes, functions: each sorted (ruff's RUF022)
    for name in names:
        assert getattr(ssegate.streams, name) is not None


def test_importing_streams_loads_neither_redis_nor_the_server() -> None:
    code = "import json, sys, ssegate.streams; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(json.loads(out.stdout))
    assert not {m for m in modules if m == "redis" or m.startswith("redis.")}
    assert "starlette" not in modules
    assert "ssegate.server" not in modules
    assert not {m for m in modules if m.startswith(("ssegate.gateway", "ssegate.cli"))}
