"""`ssegate --version` and `python -m ssegate` (a new user's first two commands)."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

import ssegate
from ssegate.cli import app


def test_version_flag_prints_the_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"ssegate {ssegate.__version__}\n"


def test_python_dash_m_runs_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ssegate", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"ssegate {ssegate.__version__}\n",
        "",
    )
