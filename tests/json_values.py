"""Hypothesis strategies for fuzzing OpenAI chat request bodies (llm and gateway tests)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

#: Any JSON value, small, with the keys of messages and tools in its objects.
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["role", "content", "type", "text", "function", "name", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)

#: The request fields ``ChatRequest.from_openai`` checks itself.
CHAT_FIELDS = (
    "model",
    "messages",
    "tools",
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "stream",
    "stream_options",
)
