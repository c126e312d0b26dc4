"""examples/python_client.py runs, so it never drifts from the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "python_client.py"


def test_python_client_example() -> None:
    out = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.splitlines() == [f'message id={n}: {{"n": {n}}}' for n in range(1, 7)]
