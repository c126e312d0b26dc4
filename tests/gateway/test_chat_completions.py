"""POST /v1/chat/completions against the echo model, read by the official openai SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from ssegate import Decoder

MESSAGES = [{"role": "user", "content": "Tokens come back one word at a time"}]
WORDS = ["Tokens", " come", " back", " one", " word", " at", " a", " time"]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_sdk_raw_stream_yields_each_word_then_usage(echo_url: str) -> None:
    stream = client(echo_url).chat.completions.create(
        model="echo",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    assert deltas == ["", *WORDS, None]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (8, 8)
    assert {c.model for c in chunks} == {"echo"}
    assert len({c.id for c in chunks}) == 1


def test_sdk_stream_helper_accumulates_the_message(echo_url: str) -> None:
    with client(echo_url).chat.completions.stream(
        model="echo",
        messages=MESSAGES,  # type: ignore[arg-type]
    ) as stream:
        texts = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert texts == ["", *WORDS]  # OpenAI too opens with an empty content delta
    assert final.choices[0].message.content == "".join(WORDS)
    assert final.choices[0].finish_reason == "stop"


def test_sdk_non_streaming(echo_url: str) -> None:
    completion = client(echo_url).chat.completions.create(
        model="echo",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=3,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Tokens come back"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (8, 3)


def test_more_tokens_than_the_message_continue_with_lorem(echo_url: str) -> None:
    completion = client(echo_url).chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=6,
    )
    assert completion.choices[0].message.content == "Hi Lorem ipsum dolor sit amet,"
    assert completion.choices[0].finish_reason == "length"


def test_every_event_has_an_id_and_the_stream_is_named(echo_url: str) -> None:
    body = {"model": "echo", "messages": MESSAGES, "stream": True}
    response = httpx.post(echo_url + "/v1/chat/completions", json=body)
    assert response.status_code == 200
    stream_id = response.headers["x-stream-id"]
    assert response.headers["link"] == f'</v1/streams/{stream_id}?format=openai>; rel="events"'
    events = Decoder().feed(response.content)
    assert all(e.id for e in events)
    # role chunk, 8 words, finish, [DONE]: ids follow the stored events (usage is
    # stored but not sent without include_usage; finish and [DONE] both come from
    # the finish: [DONE] has its id, the chunk before it that id and ".1")
    seqs = [int(e.id.rpartition("-")[2].partition(".")[0]) for e in events]
    assert seqs == [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 11]
    assert events[-2].id == events[-1].id + ".1"
    assert events[-1].data == "[DONE]"
    assert all(e.event == "message" for e in events)
    assert all(json.loads(e.data)["object"] == "chat.completion.chunk" for e in events[:-1])


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "nope", "messages": MESSAGES}, 404, "model"),
        ({"model": "echo", "messages": []}, 422, "messages"),
        ({"model": "echo"}, 422, "messages"),
        ({"messages": MESSAGES}, 422, "model"),
        ({"model": "echo", "messages": MESSAGES, "max_tokens": 0}, 422, "max_tokens"),
        ({"model": "echo", "messages": MESSAGES, "temperature": -1}, 422, "temperature"),
        ({"model": "echo", "messages": MESSAGES, "stream": "yes"}, 422, "stream"),
        (
            {"model": "echo", "messages": [{"role": "robot", "content": "x"}]},
            422,
            "messages[0].role",
        ),
        ({"model": "echo", "messages": [{"role": "user", "content": 5}]}, 422, "messages[0]"),
        ({"model": "echo", "messages": MESSAGES, "stop": 5}, 422, "stop"),
        ({"model": "echo", "messages": MESSAGES, "stop": {"a": "b"}}, 422, "stop"),
        ({"model": "echo", "messages": MESSAGES, "stop": ["a", 1]}, 422, "stop"),
        ({"model": "echo", "messages": MESSAGES, "tools": [{"function": 3}]}, 422, "tools[0]"),
        ({"model": "echo", "messages": MESSAGES, "stream_options": 3}, 422, "stream_options"),
    ],
)
def test_bad_requests_get_openai_errors_before_any_byte(
    echo_url: str, body: dict[str, object], status: int, param: str | None
) -> None:
    response = httpx.post(echo_url + "/v1/chat/completions", json={"stream": True, **body})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["param"] == param
    if status == 404:
        assert "available: local, echo" in error["message"]
    else:
        assert error["message"].startswith((param, f"'{param}'"))  # the field named first


def test_the_sdk_raises_its_not_found_error_for_an_unknown_model(echo_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(echo_url).chat.completions.create(model="gpt-9", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"
