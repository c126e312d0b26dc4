"""The core alone: the wheel built from this checkout, in a fresh venv, without any extra.

A new user who wants only the client or ``EventSourceResponse`` installs httpx,
Starlette and anyio with ssegate, nothing more; the parts that need an extra
say which one when imported. The venv gets uvicorn too, as the user's own
server (the test serves the response under it for real).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The distributions a core install brings (ssegate's three and theirs), plus uvicorn's.
CORE = {"ssegate", "httpx", "httpcore", "h11", "idna", "certifi", "anyio", "starlette"}
CORE |= {"typing_extensions"}  # starlette's and anyio's
SERVER = {"uvicorn", "click"}

SCRIPT = r"""
import importlib, importlib.metadata, json, subprocess, sys
from starlette.applications import Starlette
from starlette.routing import Route
import ssegate
from ssegate import EventSource, EventSourceResponse
from ssegate.testing import serve

async def answer(request):
    async def tokens():
        for word in ["Paris", " is", " the", " capital", "."]:
            yield {"text": word}
        yield ssegate.Event('{"finish_reason": "stop"}', event="done", id="6")
    return EventSourceResponse(tokens())

app = Starlette(routes=[Route("/answer", answer)])
with serve(app) as server, EventSource(server.url + "/answer") as source:
    events = [[e.event, e.data, e.id] for e in source.until_done()]

refusals = {}
for module in ["ssegate.gateway", "ssegate.local", "ssegate.streams.redis", "ssegate.cli._app"]:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        refusals[module] = [type(exc).__name__, str(exc)]
command = subprocess.run(
    [sys.executable, "-m", "ssegate", "--version"], capture_output=True, text=True
)
dists = sorted(
    d.metadata["Name"].lower().replace("-", "_") for d in importlib.metadata.distributions()
)
print(json.dumps({
    "events": events,
    "refusals": refusals,
    "command": [command.returncode, command.stdout, command.stderr],
    "dists": dists,
}))
"""


def _extra_message(part: str, extra: str, missing: str) -> str:
    return (
        f"{part} needs the '{extra}' extra ({missing} not installed): "
        f"pip install 'ssegate[{extra}]'  (from a checkout: pip install '.[{extra}]')"
    )


@pytest.mark.slow
def test_core_alone_serves_and_follows_a_stream(tmp_path: Path) -> None:
    def run(*command: str | Path) -> None:
        subprocess.run([str(c) for c in command], check=True, capture_output=True, timeout=120)

    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, ROOT)
    (wheel,) = dist.glob("ssegate-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)  # pip of this interpreter installs into it
    python = env_dir / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel, "uvicorn")

    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run(
        [python, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # not the checkout: the installed wheel, not src/
        env=environ,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["events"] == [
        ["message", '{"text":"Paris"}', ""],
        ["message", '{"text":" is"}', ""],
        ["message", '{"text":" the"}', ""],
        ["message", '{"text":" capital"}', ""],
        ["message", '{"text":"."}', ""],
        ["done", '{"finish_reason": "stop"}', "6"],
    ]
    gateway = ", ".join(["fastapi", "pydantic_settings", "prometheus_client", "aiohttp"])
    gateway += ", typer, rich"
    assert report["refusals"] == {
        "ssegate.gateway": [
            "MissingExtra",
            _extra_message("ssegate.gateway", "gateway", gateway),
        ],
        "ssegate.local": [
            "MissingExtra",
            _extra_message("ssegate.local", "local", "numpy, tokenizers, jinja2, threadpoolctl"),
        ],
        "ssegate.streams.redis": [
            "MissingExtra",
            _extra_message("ssegate.streams.redis", "redis", "redis"),
        ],
        "ssegate.cli._app": [
            "MissingExtra",
            _extra_message("the ssegate command", "gateway", gateway),
        ],
    }
    assert report["command"] == [
        1,
        "",
        "ssegate: " + _extra_message("the ssegate command", "gateway", gateway) + "\n",
    ]
    assert set(report["dists"]) == CORE | SERVER
