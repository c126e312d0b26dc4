"""``running_loop()``: asyncio's running loop, known without a look-up inside
``loop_known()`` (``ssegate.server._running``)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from ssegate.server._running import known_loop, loop_known, running_loop


def _no_look_up() -> asyncio.AbstractEventLoop:
    raise AssertionError("looked the loop up")


def test_inside_loop_known_the_loop_is_known_without_a_look_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert known_loop() is None
        assert running_loop() is loop  # asyncio's look-up
        with loop_known():
            monkeypatch.setattr(asyncio, "get_running_loop", _no_look_up)
            assert known_loop() is loop
            assert running_loop() is loop
            monkeypatch.undo()
            with loop_known():  # nested: the outer one's, still
                assert known_loop() is loop
            assert known_loop() is loop
        assert known_loop() is None

    asyncio.run(main())


def test_outside_a_loop_it_raises_as_asyncio_does() -> None:
    with loop_known():  # no loop runs: nothing is known
        assert known_loop() is None
        with pytest.raises(RuntimeError):
            running_loop()


def test_other_threads_do_not_know_this_ones_loop() -> None:
    seen: list[object] = []

    async def main() -> None:
        with loop_known():
            thread = threading.Thread(target=lambda: seen.append(known_loop()))
            thread.start()
            thread.join()

    asyncio.run(main())
    assert seen == [None]


@pytest.mark.skipif(
    not hasattr(os, "fork") or sys.platform == "darwin",
    reason="needs os.fork, which Windows lacks and macOS makes unsafe in a threaded process",
)
def test_a_child_forked_while_the_loop_runs_knows_no_loop() -> None:
    read, write = os.pipe()

    async def main() -> int:
        with loop_known():
            pid = os.fork()
            if pid == 0:  # the child: asyncio sees no running loop here, nor do we
                try:
                    running_loop()
                except RuntimeError:
                    os.write(write, b"none")
                else:
                    os.write(write, b"a loop")
                os._exit(0)
            return pid

    pid = asyncio.run(main())
    os.close(write)
    os.waitpid(pid, 0)
    answer = os.read(read, 16)
    os.close(read)
    assert answer == b"none"
