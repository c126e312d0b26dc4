"""Charts and a Markdown report for the benchmarks, beside the tables they print.

Each benchmark makes one ``Report``, calls ``table()`` for every table it prints
(one figure per contestant: ssegate and each peer) and ``save()`` at the end. That
writes, into ``benchmarks/results/`` (or ``$SSEGATE_BENCH_RESULTS``):

- one PNG bar chart per table, ssegate's bar beside each peer's;
- ``<benchmark>.md``: the tables with the ratio of each peer's median to ssegate's,
  said the way round that reads ("ssegate 2.1x faster"), the charts embedded;
- ``report.md``: every benchmark's section that exists, in one file.

matplotlib comes with the ``bench`` extra; without it the report is written
without charts (and says so).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["RESULTS", "Report", "Table"]

RESULTS = Path(os.environ.get("SSEGATE_BENCH_RESULTS") or Path(__file__).parent / "results")
OURS = "#1f6feb"
PEER = "#9aa4ae"


@dataclass
class Table:
    """One table: a figure per contestant, in ``unit``; ``ours`` names ssegate's row."""

    title: str
    unit: str
    values: dict[str, float]
    ours: str
    higher_is_better: bool
    words: tuple[str, str] = ("faster", "slower")

    def ratio(self, name: str) -> float | None:
        """How many times better ssegate is than ``name`` (> 1: ssegate wins)."""
        mine, theirs = self.values[self.ours], self.values[name]
        if mine <= 0 or theirs <= 0:
            return None
        return mine / theirs if self.higher_is_better else theirs / mine

    def verdict(self, name: str) -> str:
        """The ratio said the way round that reads: "ssegate 2.10x faster"."""
        ratio = self.ratio(name)
        if name == self.ours:
            return "—"
        if ratio is None:
            return "n/a"
        good, bad = self.words
        us = "ssegate" if self.ours.startswith("ssegate") else self.ours
        return f"{us} {ratio:.2f}x {good}" if ratio >= 1 else f"{us} {1 / ratio:.2f}x {bad}"


@dataclass
class Report:
    """The charts and Markdown section of one benchmark (``name``: its file's stem)."""

    name: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    directory: Path = RESULTS

    def table(
        self,
        title: str,
        unit: str,
        values: dict[str, float],
        *,
        ours: str | None = None,
        higher_is_better: bool,
        words: tuple[str, str] = ("faster", "slower"),
    ) -> Table:
        """Record one table (the figures already printed), to chart and report.

        ``ours`` is ssegate's row: by default the first named "ssegate...", or the
        first row when a run measured only peers (its ratios are then to that row).
        """
        if ours is None:
            ours = next((name for name in values if name.startswith("ssegate")), next(iter(values)))
        made = Table(title, unit, dict(values), ours, higher_is_better, words)
        self.tables.append(made)
        return made

    def _slug(self, index: int, title: str) -> str:
        words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60]
        return f"{self.name}-{index + 1:02d}-{words}.png"

    def _chart(self, table: Table, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        names = list(table.values)
        values = [table.values[n] for n in names]
        fig, ax = plt.subplots(figsize=(7.5, 0.5 + 0.45 * len(names)))
        colors = [OURS if n == table.ours else PEER for n in names]
        bars = ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        ax.set_xlabel(f"{table.unit} ({'higher' if table.higher_is_better else 'lower'} is better)")
        ax.set_title(table.title, fontsize=10)
        labels = [
            f"{v:,.3g}" + ("" if n == table.ours else f"  ({table.verdict(n)})")
            for n, v in zip(names, values, strict=True)
        ]
        ax.bar_label(bars, labels=labels, padding=3, fontsize=8)
        ax.set_xlim(0, max(values) * 1.6 if values and max(values) > 0 else 1)
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def save(self) -> Path:
        """Write the charts, ``<name>.md`` and ``report.md``; the section's path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for old in self.directory.glob(f"{self.name}-*.png"):
            old.unlink()
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            charts = False
        else:
            charts = True
        lines = [f"## {self.name}", ""]
        if self.intro:
            lines += [self.intro, ""]
        if not charts:
            lines += ["(no charts: matplotlib is not installed; `pip install '.[bench]'`)", ""]
        for index, table in enumerate(self.tables):
            lines += [f"### {table.title}", ""]
            lines += [f"| | {table.unit} | ssegate against it |", "| --- | ---: | --- |"]
            for name, value in table.values.items():
                lines.append(f"| {name} | {value:,.4g} | {table.verdict(name)} |")
            lines.append("")
            if charts:
                chart = self._slug(index, table.title)
                self._chart(table, self.directory / chart)
                lines += [f"![{table.title}]({chart})", ""]
        section = self.directory / f"{self.name}.md"
        section.write_text("\n".join(lines))
        self._write_index()
        print(f"(charts and report: {section})")
        return section

    def _write_index(self) -> None:
        sections = sorted(p for p in self.directory.glob("*.md") if p.name != "report.md")
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        head = [
            "# ssegate benchmarks",
            "",
            f"Written {stamp} by `make bench` (`benchmarks/_report.py`). Each ratio is of "
            "medians measured side by side in one run; on a shared machine compare ratios, "
            "not absolute figures.",
            "",
        ]
        body = [p.read_text() for p in sections]
        (self.directory / "report.md").write_text("\n".join(head + body))
