"""The docs site's runnable snippets run (the build itself is `make docs`, in `make test`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
#: Pages whose Python blocks are complete programs needing nothing but this checkout.
RUNNABLE = ["index.md", "streams.md"]
SNIPPETS = [
    (page, code)
    for page in RUNNABLE
    for code in re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.DOTALL)
]


def test_every_runnable_page_has_a_snippet() -> None:
    assert sorted({page for page, _ in SNIPPETS}) == sorted(RUNNABLE)


@pytest.mark.parametrize(("page", "code"), SNIPPETS, ids=[p for p, _ in SNIPPETS])
def test_docs_snippet_runs(page: str, code: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(code, str(DOCS / page), "exec"), {"__name__": "__docs__"})
    out = capsys.readouterr().out
    if page == "streams.md":  # what the page says it prints, but for the epoch
        assert re.sub(r"id='[0-9a-f]{8}-", "id='EPOCH-", out) == (
            "Event(data='{\"text\": \"lo\"}', event='token', id='EPOCH-000000000002', retry=None)\n"
            "End(outcome='done', id='EPOCH-000000000003')\n"
        )
