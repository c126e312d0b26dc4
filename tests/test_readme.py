"""The README's Python snippets run, so they never drift from the code."""

from __future__ import annotations

import json
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


def test_make_run_demo_answers_with_the_local_model() -> None:
    """``make run``'s demo: the embedded model's answer streamed over real SSE."""
    demo = README.parent / "examples" / "demo.py"
    result = subprocess.run(
        [sys.executable, str(demo), "What is the capital of France?", "--max-tokens", "24"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    # Greedy decoding (temperature 0), so the answer is exact.
    assert result.stdout == "The capital of France is Paris.\n"
    stats = json.loads(result.stderr.strip().splitlines()[-1])
    assert stats["finish_reason"] == "stop"
    assert stats["usage"] == {"input_tokens": 37, "output_tokens": 7, "total_tokens": 44}
