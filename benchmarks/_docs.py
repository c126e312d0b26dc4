"""An MkDocs hook (mkdocs.yml ``hooks:``): the latest ``make bench`` results in the docs site.

When ``benchmarks/results/report.md`` exists (it is not committed: figures belong to
the machine that ran them), its sections and charts are appended to the Benchmarks
page; otherwise the page says how to make them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).parent / "results"
PAGE = "benchmarks.md"


def on_files(files: Files, config: Any) -> Files:
    for chart in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"results/{chart.name}", abs_src_path=str(chart)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    report = RESULTS / "report.md"
    if not report.is_file():
        return markdown + "\n## Latest results\n\nNone on this machine yet: run `make bench`.\n"
    text = report.read_text().split("\n", 1)[1]  # without its title
    text = text.replace("](", "](results/")  # the charts, where on_files put them
    text = text.replace("\n### ", "\n#### ").replace("\n## ", "\n### ")  # under this one
    return markdown + "\n## Latest results\n" + text
