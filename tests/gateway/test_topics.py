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
            head = [next(lines) for _ in range(10)]
    epoch = ids[0].split("-")[0]
    assert head == [
        "retry: 1000",  # a browser's EventSource reconnects after 1 s
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
    for bad_id in ("", "a b", "é", "x" * 129, 7):
        own_id = httpx.post(url + "ok", json={"data": "x", "id": bad_id})
        assert own_id.status_code == 422
        assert own_id.json()["error"]["param"] == "id"
    unknown = httpx.get(url + "never", headers={"Last-Event-ID": "0000abcd-000000000001"})
    assert unknown.status_code == 400


def _history(url: str, topic: str) -> list[tuple[str, str]]:
    """Every event of a topic so far: (id, data)."""
    got: list[tuple[str, str]] = []
    with httpx.stream("GET", f"{url}/v1/topics/{topic}") as response:
        decoder = ssegate.Decoder()
        for chunk in response.iter_bytes():
            for event in decoder.feed(chunk):
                got.append((event.id or "", event.data))
                if event.data == "end":
                    return got
    return got


def test_a_resent_publish_with_the_same_id_is_appended_once(echo_url: str) -> None:
    url = echo_url + "/v1/topics/orders"
    first = httpx.post(url, json={"data": {"n": 1}, "id": "req-1"})
    again = httpx.post(url, json={"data": {"n": 1}, "id": "req-1"})
    other = httpx.post(url, json={"data": {"n": 1}, "id": "req-2"})
    plain = [httpx.post(url, json={"data": {"n": 1}}) for _ in range(2)]
    reused = httpx.post(url, json={"data": {"n": 2}, "id": "req-1"})
    publish(echo_url, "orders", data="end")
    assert [r.status_code for r in (first, again, other, *plain)] == [200] * 5
    assert first.json() == {"topic": "orders", "id": first.json()["id"], "duplicate": False}
    assert again.json() == {"topic": "orders", "id": first.json()["id"], "duplicate": True}
    assert other.json()["duplicate"] is False
    assert reused.status_code == 409
    assert reused.json()["error"] == {
        "message": f"id: 'req-1' was already used for a different event on this topic "
        f"(its id is {first.json()['id']})",
        "type": "invalid_request_error",
        "code": "id_reused",
        "param": "id",
    }
    ids = [first.json()["id"], other.json()["id"], *(r.json()["id"] for r in plain)]
    assert [seq(i) for i in ids] == [1, 2, 3, 4]
    assert [event_id for event_id, _ in _history(echo_url, "orders")][:-1] == ids
    # an id is per topic: the same one on another topic is another event
    elsewhere = httpx.post(echo_url + "/v1/topics/orders2", json={"data": "x", "id": "req-1"})
    assert elsewhere.json()["duplicate"] is False


def test_concurrent_publishes_with_one_id_append_one_event(echo_url: str) -> None:
    url = echo_url + "/v1/topics/race"
    answers: list[httpx.Response] = []

    def send() -> None:
        answers.append(httpx.post(url, json={"data": "once", "id": "same"}))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    publish(echo_url, "race", data="end")
    assert sorted(r.json()["duplicate"] for r in answers) == [False] + [True] * 7
    assert {r.json()["id"] for r in answers} == {answers[0].json()["id"]}
    assert [data for _, data in _history(echo_url, "race")] == ["once", "end"]
