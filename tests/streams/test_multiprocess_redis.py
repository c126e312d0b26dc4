"""Two processes sharing Redis: publish in one, receive and resume in the other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.redis

SCRIPT = str(Path(__file__).with_name("stream_process.py"))
N = 25


def expected(epoch: str, numbers: range) -> list[dict[str, str]]:
    return [{"id": f"{epoch}-{i:012d}", "event": "token", "data": f"event {i}"} for i in numbers]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=60, check=True
    )


def test_a_subscriber_in_one_process_gets_what_another_publishes_exactly_once(
    redis_url: str, redis_prefix: str
) -> None:
    subscriber = subprocess.Popen(
        [sys.executable, SCRIPT, "subscribe", redis_url, redis_prefix, "topic"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert subscriber.stdout is not None
        assert json.loads(subscriber.stdout.readline()) == {"ready": True}
        published = run("publish", redis_url, redis_prefix, "topic", str(N))
        published_ids = published.stdout.split()
        epoch = published_ids[0].partition("-")[0]
        assert published_ids == [f"{epoch}-{i:012d}" for i in range(1, N + 1)]
        out, err = subscriber.communicate(timeout=60)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.communicate()
    assert subscriber.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    end = {"end": "done", "id": f"{epoch}-{N + 1:012d}"}
    assert lines == [*expected(epoch, range(1, N + 1)), end]


def test_a_reader_resumes_in_one_process_what_another_produced(
    redis_url: str, redis_prefix: str
) -> None:
    published = run("publish", redis_url, redis_prefix, "gen", str(N))
    epoch = published.stdout.split()[0].partition("-")[0]
    resumed = run("subscribe", redis_url, redis_prefix, "gen", f"{epoch}-{10:012d}")
    lines = [json.loads(line) for line in resumed.stdout.splitlines()]
    end = {"end": "done", "id": f"{epoch}-{N + 1:012d}"}
    assert lines == [{"ready": True}, *expected(epoch, range(11, N + 1)), end]
