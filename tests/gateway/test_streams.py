"""/v1/streams: start, follow in every format, resume after any id, stop; and a
dropped POST resumed by ssegate's own EventSource with nothing lost or repeated."""

from __future__ import annotations

import httpx
import pytest
from gateway_support import cutting_proxy, events, seq

import ssegate

BODY = {"model": "echo", "messages": [{"role": "user", "content": "one two three four"}]}


def start(url: str, body: dict[str, object] = BODY) -> str:
    response = httpx.post(url + "/v1/streams", json=body)
    assert response.status_code == 201
    stream_id = response.json()["id"]
    assert response.json() == {"id": stream_id, "events_url": f"/v1/streams/{stream_id}"}
    assert response.headers["location"] == f"/v1/streams/{stream_id}"
    return str(stream_id)


def test_native_events(echo_url: str) -> None:
    stream_id = start(echo_url)
    response = httpx.get(f"{echo_url}/v1/streams/{stream_id}")
    assert response.status_code == 200
    got = [(e.event, e.data, seq(e.id)) for e in events(response)]
    assert got == [
        ("token", '{"text": "one"}', 2),
        ("token", '{"text": " two"}', 3),
        ("token", '{"text": " three"}', 4),
        ("token", '{"text": " four"}', 5),
        ("usage", '{"input_tokens": 4, "output_tokens": 4, "total_tokens": 8}', 6),
        ("done", '{"finish_reason": "stop"}', 7),
    ]


@pytest.mark.parametrize("fmt", ["native", "openai", "aisdk"])
@pytest.mark.parametrize("how", ["header", "query"])
def test_resume_after_every_id_in_every_format(echo_url: str, fmt: str, how: str) -> None:
    stream_id = start(echo_url)
    url = f"{echo_url}/v1/streams/{stream_id}?format={fmt}"
    whole = events(httpx.get(url))
    assert whole
    assert all(e.id for e in whole)
    if fmt != "native":
        assert whole[-1].data == "[DONE]"
    # every wire event has its own id (the parts of one stored event: "<id>.1", ...,
    # "<id>"), and resuming after it sends exactly the events after it
    assert len({e.id for e in whole}) == len(whole)
    for n, event in enumerate(whole):
        after = event.id
        if how == "header":
            response = httpx.get(url, headers={"Last-Event-ID": after})
        else:
            response = httpx.get(url + f"&last_event_id={after}")
        rest = whole[n + 1 :]
        if not rest:  # finished, nothing after: 204 so EventSource stops
            assert response.status_code == 204
            assert response.content == b""
        else:
            assert response.status_code == 200
            assert events(response) == rest


def test_unknown_and_foreign_streams_are_404(echo_url: str) -> None:
    for name in ["gen_" + "0" * 32, "topic:prices", "nope"]:
        response = httpx.get(f"{echo_url}/v1/streams/{name}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "stream_not_found"
        assert httpx.delete(f"{echo_url}/v1/streams/{name}").status_code == 404


def test_an_id_from_another_stream_is_400(echo_url: str) -> None:
    first, second = start(echo_url), start(echo_url)
    other_id = events(httpx.get(f"{echo_url}/v1/streams/{first}"))[0].id
    response = httpx.get(f"{echo_url}/v1/streams/{second}", headers={"Last-Event-ID": other_id})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_event_id"
    assert set(response.json()["error"]) == {"message", "type", "code", "param"}


def test_bad_format_is_422_naming_it(echo_url: str) -> None:
    stream_id = start(echo_url)
    response = httpx.get(f"{echo_url}/v1/streams/{stream_id}?format=xml")
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "format"


@pytest.mark.parametrize("cut_after", [900, 2500])
def test_event_source_resumes_a_dropped_post_by_get(gateway, cut_after: int) -> None:  # type: ignore[no-untyped-def]
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": "a b c d e f g h i j k l m n o p"}],
        "stream": True,
    }
    with gateway() as server:
        whole = events(httpx.post(server.url + "/v1/chat/completions", json=body))
        with cutting_proxy(server.port, cut_after) as proxy:
            got = []
            with ssegate.EventSource(
                proxy + "/v1/chat/completions", method="POST", json=body, max_retries=3
            ) as source:
                for event in source:
                    got.append(event)
                    if event.data == "[DONE]":
                        break
                assert source.stream_id is not None
        resumes = httpx.get(server.url + "/metrics").text
    assert "\nssegate_resumes_total 1.0\n" in resumes  # it did drop, and resumed once
    texts = [e.data.split('"delta":')[1] for e in got[:-1]]
    expected = [e.data.split('"delta":')[1] for e in whole[:-1]]
    assert texts == expected  # every chunk once, in order (ids and chat id differ per run)
    assert [seq(e.id) for e in got] == [seq(e.id) for e in whole]
