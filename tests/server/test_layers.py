"""ssegate.server imports only the layers below it, and nothing happens at import."""

from __future__ import annotations

import json
import subprocess
import sys


def run(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def test_server_imports_only_lower_layers_and_has_no_side_effects() -> None:
    result = run(
        "import json, signal, sys, threading\n"
        "before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}\n"
        "threads = threading.active_count()\n"
        "import ssegate.server\n"
        "after = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}\n"
        "print(json.dumps({'modules': sorted(sys.modules),\n"
        "                  'signals_unchanged': before == after,\n"
        "                  'threads_unchanged': threads == threading.active_count()}))\n"
    )
    modules = {str(m) for m in result["modules"]}  # type: ignore[attr-defined]
    ours = {m.split(".")[1] for m in modules if m.startswith("ssegate.")}
    assert ours <= {"_exceptions", "_fork", "protocol", "server"}  # _fork: os only
    top = {m.split(".")[0] for m in modules}
    assert not top & {"uvicorn", "httpx", "redis", "numpy", "typer", "fastapi", "django", "flask"}
    assert result["signals_unchanged"] is True
    assert result["threads_unchanged"] is True
