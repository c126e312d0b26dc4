"""docs/migration.md runs: each snippet prints exactly the output block under it.

The sse-starlette and httpx-sse halves run against those libraries, so the
side-by-side claims are checked, not remembered; the tests below the snippets
check what the prose says about sse-starlette.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import sse_starlette

GUIDE = Path(__file__).parent.parent / "docs" / "migration.md"
# A python block, and the text block right under it (its exact output), if any.
SNIPPETS = re.findall(
    r"```python\n(.*?)```\n(?:\n```text\n(.*?)```\n)?", GUIDE.read_text(), re.DOTALL
)


def test_every_snippet_shows_its_output() -> None:
    assert len(SNIPPETS) == 4
    assert all(output for _, output in SNIPPETS)


@pytest.mark.parametrize(
    ("code", "output"), SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))]
)
def test_snippet_prints_what_the_guide_shows(code: str, output: str) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(GUIDE), "exec"), {"__name__": "__guide__"})
    assert printed.getvalue() == output


def test_sse_starlette_reads_an_openai_chunk_as_fields_and_fails() -> None:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": []}
    with pytest.raises(TypeError, match="unexpected keyword argument 'object'"):
        sse_starlette.ServerSentEvent(**chunk)


def test_sse_starlette_drops_line_breaks_in_fields() -> None:
    sent = sse_starlette.ServerSentEvent("x", id="1\n2", event="a\nb", sep="\n").encode()
    assert sent == b"id: 12\nevent: ab\ndata: x\n\n"
