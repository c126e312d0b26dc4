"""``openai_fields``: a chat body's fields as ``model_dump`` gave them, without its serializer."""

from __future__ import annotations

from typing import Any

import pytest

from ssegate.gateway._begin import ChatCompletionBody, openai_fields

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": MESSAGES},
        {"model": "m", "messages": MESSAGES, "stream": True},
        {
            "seed": 7,
            "stream": True,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "messages": MESSAGES,
            "stream_options": {"include_usage": True, "other": 1},
            "temperature": 0.5,
            "model": "m",
            "max_tokens": 3,
            "top_p": 0.9,
        },
        {"model": "m", "messages": MESSAGES, "stream_options": {}, "max_completion_tokens": 2},
        {"model": "m", "messages": MESSAGES, "stream_options": None, "temperature": None},
    ],
)
def test_openai_fields_are_the_dump_of_the_sent_fields(body: dict[str, Any]) -> None:
    parsed = ChatCompletionBody.model_validate(body)
    dumped = parsed.model_dump(exclude_unset=True, exclude={"stream"})
    if parsed.stream_options is not None:
        dumped["stream_options"] = parsed.stream_options.model_dump()
    fields = openai_fields(parsed)
    assert list(fields.items()) == list(dumped.items())  # the same, in the same order
