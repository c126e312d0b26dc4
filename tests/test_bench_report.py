"""benchmarks/_report.py: the charts and the Markdown that every benchmark writes."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

HELPER = Path(__file__).parent.parent / "benchmarks" / "_report.py"


@pytest.fixture(scope="module")
def report_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", HELPER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_tables_become_charts_and_markdown(report_module: ModuleType, tmp_path: Path) -> None:
    report = report_module.Report("decoder", "MB/s decoding.", directory=tmp_path)
    report.table(
        "4 KiB chunks",
        "MB/s",
        {"ssegate Decoder": 90.0, "httpx-sse": 30.0, "sseclient-py": 180.0},
        higher_is_better=True,
    )
    report.table(
        "one big event",
        "ms",
        {"ssegate Decoder": 100.0, "httpx-sse": 250.0},
        higher_is_better=False,
    )
    (tmp_path / "decoder-09-stale.png").write_bytes(b"old")
    section = report.save()

    assert section == tmp_path / "decoder.md"
    assert section.read_text() == (
        "## decoder\n\nMB/s decoding.\n\n"
        "### 4 KiB chunks\n\n"
        "| | MB/s | ssegate against it |\n| --- | ---: | --- |\n"
        "| ssegate Decoder | 90 | — |\n"
        "| httpx-sse | 30 | ssegate 3.00x faster |\n"
        "| sseclient-py | 180 | ssegate 2.00x slower |\n\n"
        "![4 KiB chunks](decoder-01-4-kib-chunks.png)\n\n"
        "### one big event\n\n"
        "| | ms | ssegate against it |\n| --- | ---: | --- |\n"
        "| ssegate Decoder | 100 | — |\n"
        "| httpx-sse | 250 | ssegate 2.50x faster |\n\n"
        "![one big event](decoder-02-one-big-event.png)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "decoder-01-4-kib-chunks.png",
        "decoder-02-one-big-event.png",
        "decoder.md",
        "report.md",
    ]
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = (tmp_path / "report.md").read_text()
    assert re.sub(r"Written .* UTC", "Written <time>", index) == (
        "# ssegate benchmarks\n\n"
        "Written <time> by `make bench` (`benchmarks/_report.py`). Each ratio is of medians "
        "measured side by side in one run; on a shared machine compare ratios, not absolute "
        "figures.\n\n" + section.read_text()
    )


def test_a_run_of_peers_only_is_reported_against_its_first_row(
    report_module: ModuleType, tmp_path: Path
) -> None:
    report = report_module.Report("server", directory=tmp_path)
    table = report.table(
        "lateness p99", "ms", {"raw": 2.0, "sse-starlette@fastapi": 8.0}, higher_is_better=False
    )
    assert table.ours == "raw"
    assert table.verdict("sse-starlette@fastapi") == "raw 4.00x faster"
