"""encode_item: what a producer may yield, and the bytes each becomes."""

from __future__ import annotations

from typing import Any

import pytest

from ssegate import Event
from ssegate.server import encode_item


class MyStr(str):
    pass


class MyDict(dict[str, Any]):
    pass


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (Event("a", event="x", id="7", retry=10), b"event: x\nid: 7\nretry: 10\ndata: a\n\n"),
        ("plain", b"data: plain\n\n"),
        ("two\r\nlines", b"data: two\ndata: lines\n\n"),
        ("", b"data: \n\n"),
        ("\u2028 stays", "data: \u2028 stays\n\n".encode()),
        ({"b": [1, 2], "s": "é\n"}, b'data: {"b":[1,2],"s":"\xc3\xa9\\n"}\n\n'),
        ({}, b"data: {}\n\n"),
        (b"data: pre-encoded\n\n", b"data: pre-encoded\n\n"),
        (b"", b""),
        (bytearray(b": c\n"), b": c\n"),
        (memoryview(b"data: m\n\n"), b"data: m\n\n"),
        (MyStr("sub"), b"data: sub\n\n"),
        (MyDict(k=1), b'data: {"k":1}\n\n'),
    ],
)
def test_encode_item(item: Any, expected: bytes) -> None:
    assert encode_item(item) == expected


@pytest.mark.parametrize("item", [1, 1.5, None, ["list"], ("t",), object()])
def test_other_types_are_refused(item: Any) -> None:
    with pytest.raises(TypeError, match=f"not {type(item).__name__}$"):
        encode_item(item)


def test_dict_that_is_not_json_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_item({"when": object()})
