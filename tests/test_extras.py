"""The parts beyond the core name their extra when it is missing (in a fresh interpreter).

tests/test_install_core.py sees it in a real core-only venv; here an extra is made
to miss one module, so the same paths run against this checkout.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ssegate import _extras as extras
from ssegate._extras import MissingExtra, require

PREFIX = "import ssegate._extras as x; x.EXTRAS['local'] += ('no_such_module_here',)\n"


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PREFIX + code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


MESSAGE = (
    "ssegate.local needs the 'local' extra (no_such_module_here not installed): "
    "pip install 'ssegate[local]'  (from a checkout: pip install '.[local]')"
)


def test_require_names_the_extra_and_the_missing_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(extras.EXTRAS, "redis", ("redis", "nope_a"))
    with pytest.raises(MissingExtra) as caught:
        require("redis", "ssegate.streams.redis")
    assert str(caught.value) == (
        "ssegate.streams.redis needs the 'redis' extra (nope_a not installed): "
        "pip install 'ssegate[redis]'  (from a checkout: pip install '.[redis]')"
    )
    assert isinstance(caught.value, ImportError)
    assert (caught.value.name, caught.value.extra) == ("nope_a", "redis")


def test_importing_local_without_its_extra() -> None:
    code = "try:\n    import ssegate.local\nexcept ImportError as exc:\n    print(exc)\n"
    assert run(code) == MESSAGE + "\n"


def test_the_gateway_without_local_says_so_when_the_model_is_asked_for() -> None:
    code = """
import anyio
from ssegate.gateway import Settings
from ssegate.gateway._models import Models

async def main():
    models = Models(Settings())
    await models.load_local()
    route = models.route("echo")  # the rest of the gateway works
    try:
        await models.local.stream(None).__anext__()
    except Exception as exc:
        refused = [type(exc).__name__, exc.status, exc.code, str(exc)]
    print(json.dumps([models.local_error, route.upstream_model, refused]))
    await models.aclose()

import json
anyio.run(main)
"""
    assert json.loads(run(code)) == [
        MESSAGE,
        "echo",
        ["UpstreamUnavailable", 503, "model_not_found", MESSAGE],
    ]
