"""``random_hex``: ``os.urandom``'s bytes as hex, a system call per batch
(``ssegate._entropy``)."""

from __future__ import annotations

import os
import threading

import pytest

from ssegate import _entropy
from ssegate._entropy import BATCH, random_hex


@pytest.fixture(autouse=True)
def fresh_buffer() -> None:
    _entropy._forget()


def test_ids_are_the_systems_bytes_each_handed_out_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[int] = []
    source = bytes(range(256)) * (BATCH // 256)

    def urandom(n: int) -> bytes:
        asked.append(n)
        return source[:n]

    monkeypatch.setattr(os, "urandom", urandom)
    ids = [random_hex(16) for _ in range(BATCH // 16 + 1)]
    assert asked == [BATCH, BATCH]  # one call per BATCH bytes
    assert "".join(ids[: BATCH // 16]) == source.hex()  # every byte, in order, once
    assert ids[-1] == source[:16].hex()  # the next batch's first


def test_ids_have_the_asked_length_and_differ() -> None:
    ids = {random_hex(16) for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert len(random_hex(3)) == 6
    assert len(random_hex(BATCH + 1)) == 2 * (BATCH + 1)  # more than a batch: asked at once


def test_threads_draw_from_buffers_of_their_own() -> None:
    got: list[str] = []
    lock = threading.Lock()

    def draw() -> None:
        mine = [random_hex(16) for _ in range(500)]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(got)) == len(got) == 2000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork, which this platform lacks")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    random_hex(16)  # a buffer to inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, random_hex(16).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert child != random_hex(16)
