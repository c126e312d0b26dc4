"""Topics: publish, subscribe (history after Last-Event-ID, then live), the gap
event when history is gone, bad names and bodies."""

from __future__ import annotations

import threading

import httpx
from gateway_support import seq

import ssegate


def publish(url: str, topic: str, **body: object) -> str:
    response = httpx.post(f"{url}/v1/topics/{topic}", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["topic"] == topic
    return str(response.json()["id"])


def test_history_then_live(echo_url: str) -> None:
    first = publish(echo_url, "prices/eurusd", event="price", data={"bid": 1.1})
    publish(echo_url, "prices/eurusd", data="plain text")
    got: list[ssegate.Event] = []
    ready = threading.Event()

    def subscribe() -> None:
        with ssegate.EventSource(echo_url + "/v1/topics/prices/eurusd", last_event_id=first) as src:
            for event in src:
                got.append(event)
                ready.set()
                if len(got) == 2:
                    return

    reader = threading.Thread(target=subscribe)
    reader.start()
    assert ready.wait(10)  # history delivered: the subscriber is following now
    third = publish(echo_url, "prices/eurusd", event="price", data=[1, 2])
    reader.join(10)
    assert [(e.event, e.data, seq(e.id)) for e in got] == [
        ("message", "plain text", 2),
        ("price", "[1, 2]", 3),
    ]
    assert got[-1].id == third


def test_a_subscriber_older_than_the_history_gets_a_gap(gateway) -> None:  # type: ignore[no-untyped-def]
    with gateway(retention_events=2) as server:
        ids = [publish(server.url, "news", data=str(i)) for i in range(5)]
        with httpx.stream(
            "GET", server.url + "/v1/topics/news", headers={"Last-Event-ID": ids[0]}
        ) as response:
            lines = response.iter_lines()
            head = [next(lines) for _ in range(9)]
    epoch = ids[0].split("-")[0]
    assert head == [
        "event: gap",
        f'data: {{"after":"{ids[0]}","first_id":"{ids[3]}","missed":2}}',
        "",
        f"id: {ids[3]}",
        "data: 3",
        "",
        f"id: {ids[4]}",
        "data: 4",
        "",
    ]
    assert ids[3].startswith(epoch)


def test_bad_topics_and_bodies(echo_url: str) -> None:
    url = echo_url + "/v1/topics/"
    bad_name = httpx.post(url + "-bad", json={"data": "x"})
    assert bad_name.status_code == 422
    assert bad_name.json()["error"]["param"] == "topic"
    no_data = httpx.post(url + "ok", json={"event": "x"})
    assert no_data.status_code == 422
    assert no_data.json()["error"]["param"] == "data"
    bad_event = httpx.post(url + "ok", json={"data": "x", "event": "a\nb"})
    assert bad_event.status_code == 422
    assert bad_event.json()["error"]["param"] == "event"
    own_id = httpx.post(url + "ok", json={"data": "x", "id": "7"})
    assert own_id.status_code == 422
    assert own_id.json()["error"]["param"] == "id"
    unknown = httpx.get(url + "never", headers={"Last-Event-ID": "0000abcd-000000000001"})
    assert unknown.status_code == 400
