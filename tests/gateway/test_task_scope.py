"""``TaskScope`` and ``Flag``: a generation's cancel scope and events on asyncio
(``_scope``), as the runner uses anyio's: each outcome asserted exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from ssegate.gateway._scope import Flag, TaskScope


def run(main: Callable[[asyncio.AbstractEventLoop], Awaitable[object]]) -> object:
    async def go() -> object:
        return await main(asyncio.get_running_loop())

    return asyncio.run(go())


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


def test_a_cancel_inside_ends_the_wait_and_is_swallowed() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> list[str]:
        seen = []
        scope = TaskScope(loop)

        async def body() -> None:
            with scope:
                try:
                    await _forever()
                finally:
                    # Clean-up that waits is not cancelled again (edge, not level).
                    await asyncio.sleep(0)
                    seen.append("cleaned up")
            seen.append("after the scope")
            await asyncio.sleep(0)  # and nothing is left pending for the task
            seen.append(f"uncancelled: {asyncio.current_task().cancelling()}")  # type: ignore[union-attr]

        task = loop.create_task(body())
        await asyncio.sleep(0)
        scope.cancel()
        scope.cancel()  # once is what counts
        await task
        assert scope.cancel_called
        return seen

    assert run(main) == ["cleaned up", "after the scope", "uncancelled: 0"]


def test_a_cancel_before_entering_lands_at_the_first_wait() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> list[str]:
        seen = []
        scope = TaskScope(loop)
        scope.cancel()

        async def body() -> None:
            with scope:
                seen.append("entered")
                await _forever()
            seen.append("after the scope")

        await loop.create_task(body())
        return seen

    assert run(main) == ["entered", "after the scope"]


@pytest.mark.parametrize("also_scope", [False, True])
def test_a_cancel_from_outside_goes_on_up(also_scope: bool) -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> str:
        scope = TaskScope(loop)

        async def body() -> None:
            with scope:
                await _forever()

        task = loop.create_task(body())
        await asyncio.sleep(0)
        if also_scope:
            scope.cancel()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "swallowed"

    assert run(main) == "cancelled"


def test_a_cancel_after_leaving_does_nothing_and_errors_pass() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> list[str]:
        seen = []
        after = TaskScope(loop)
        with after:
            await asyncio.sleep(0)
        after.cancel()
        await asyncio.sleep(0)
        seen.append("not cancelled")
        failing = TaskScope(loop)

        async def body() -> None:
            with failing:
                try:
                    await _forever()
                except asyncio.CancelledError:
                    raise ValueError("turned into an error") from None

        task = loop.create_task(body())
        await asyncio.sleep(0)
        failing.cancel()
        try:
            await task
        except ValueError as exc:
            seen.append(str(exc))
        return seen

    assert run(main) == ["not cancelled", "turned into an error"]


def test_a_scope_is_entered_once_and_in_a_task() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> list[str]:
        errors = []
        scope = TaskScope(loop)
        with scope:
            try:
                with scope:
                    pass
            except RuntimeError as exc:
                errors.append(str(exc))
        outside = TaskScope(loop)
        done: asyncio.Future[str] = loop.create_future()

        def callback() -> None:  # a loop callback: no task
            try:
                outside.__enter__()
            except RuntimeError as exc:
                done.set_result(str(exc))

        loop.call_soon(callback)
        errors.append(await done)
        return errors

    assert run(main) == ["a TaskScope is entered once", "a TaskScope is entered in a task"]


def test_a_flag_wakes_every_waiter_once_set_and_forgets_cancelled_ones() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> list[object]:
        flag = Flag(loop)
        seen: list[object] = [flag.is_set()]

        async def wait(name: str) -> None:
            await flag.wait()
            seen.append(name)

        first = loop.create_task(wait("first"))
        gone = loop.create_task(wait("gone"))
        second = loop.create_task(wait("second"))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        seen.append(len(flag._waiters or ()))
        flag.set()
        flag.set()
        await asyncio.gather(first, second)
        seen.append(flag.is_set())
        await flag.wait()  # set: at once
        seen.append("at once")
        return seen

    assert run(main) == [False, 2, "first", "second", True, "at once"]
