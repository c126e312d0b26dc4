"""The README's Python snippets run, so they never drift from the code."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_readme_has_snippets() -> None:
    assert len(SNIPPETS) >= 3


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_snippet_runs(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    capsys.readouterr()


def test_demo_streams_the_whole_answer() -> None:
    """``make run``'s demo prints the answer whole, in order, and ends cleanly."""
    demo = README.parent / "examples" / "demo.py"
    spec = importlib.util.spec_from_file_location("ssegate_demo", demo)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = subprocess.run(
        [sys.executable, str(demo)], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == module.ANSWER + "\n"
    assert "19 events" in result.stderr
