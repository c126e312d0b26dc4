"""Auto-pipelining: script calls made in one event-loop turn go out as one pipeline.

A stream's start and end cost a replica a few single-stream calls (its lease,
a reader's first reads, its end). Each alone is a socket write, a wake-up of
Redis and a reply read, and on loopback the write is most of a call's CPU. A
burst of starts makes many such calls in the same turn of the event loop;
sent together (one write, the replies read in order) they cost one round trip.

Each call still gets its own reply or its own error; a call whose caller was
cancelled meanwhile may or may not have run, as any single call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # C, as redis-py's synchronous client packs commands (with redis[hiredis])
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - redis-py's own (Python) packing
    _pack = None

__all__ = ["ScriptCalls", "pack_commands", "resolve"]

_Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptCalls:
    """Calls of ``redis``'s scripts, gathered per loop turn (see the module doc)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._calls: list[_Call] = []
        #: The task that will send ``_calls`` (not started yet), if any.
        self._next: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any] = ()
    ) -> Any:
        """``script(keys=keys, args=args)``, sent with the others of this loop turn."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if self._next is None or self._next.done():  # (done: cancelled before it ran)
            # The sending task's first step runs next turn and takes every call
            # made until then: one turn of the loop from the call to the write (a
            # callback that made the task would cost two, a turn being long under
            # load: each call of a stream's start waited one more).
            self._next = task = loop.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        self._calls.append((script, keys, args, reply))
        return await reply

    async def _send(self) -> None:
        self._next = None
        calls, self._calls = self._calls, []
        await self._run(calls)

    async def _run(self, calls: list[_Call]) -> None:
        try:
            if len(calls) == 1:
                script, keys, args, _ = calls[0]
                outcomes: list[Any] = [await _outcome(script(keys=keys, args=args))]
            else:
                outcomes = await self._pipelined(calls)
        except Exception as exc:  # the connection failed: every call fails with it
            outcomes = [exc] * len(calls)
        except BaseException:  # cancelled (the loop is closing): so are the calls
            for *_, reply in calls:
                reply.cancel()
            raise
        _settle(calls, outcomes)

    async def _pipelined(self, calls: list[_Call]) -> list[Any]:
        """The calls' ``EVALSHA``s sent in one write on one of the pool's
        connections, their replies read in order (redis-py's sending and reading;
        packed by hiredis). A redis-py pipeline cost the client ~1 000 bytecodes
        per call (its command stack, Python packing at ~70 per argument, a parse
        per reply), and a stream's start and end make a few calls each."""
        pool = self._redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            commands = [("EVALSHA", s.sha, len(keys), *keys, *args) for s, keys, args, _ in calls]
            await connection.send_packed_command(pack_commands(connection, commands))
            outcomes: list[Any] = []
            for _ in calls:
                try:
                    outcomes.append(await connection.read_response())
                except ResponseError as exc:  # its own error: the next replies follow
                    outcomes.append(exc)
        finally:
            await pool.release(connection)
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, NoScriptError):  # Redis restarted: load it and call again
                script, keys, args, _ = calls[i]
                outcomes[i] = await _outcome(script(keys=keys, args=args))
        return outcomes

    async def aclose(self) -> None:
        """Wait for the calls being sent (their callers get their replies)."""
        while self._sending:  # a call waiting to be sent has its task there
            await asyncio.gather(*self._sending, return_exceptions=True)


def pack_commands(connection: AbstractConnection, commands: Sequence[Sequence[Any]]) -> list[bytes]:
    """``commands`` as ``connection`` sends them: packed by hiredis (C, as redis-py's
    synchronous client packs), else by redis-py's asyncio connection (Python)."""
    if _pack is not None:
        return [_pack(tuple(command)) for command in commands]
    return connection.pack_commands(commands)  # pragma: no cover - without redis[hiredis]


async def _outcome(call: Any) -> Any:
    try:
        return await call
    except Exception as exc:
        return exc


def _settle(calls: list[_Call], outcomes: list[Any]) -> None:
    resolve([reply for *_, reply in calls], outcomes)


def resolve(waiters: Iterable[asyncio.Future[Any]], outcomes: Iterable[Any]) -> None:
    """Give each waiter its outcome: an exception raises, anything else is the result."""
    for waiter, outcome in zip(waiters, outcomes, strict=True):
        if waiter.done():  # its caller was cancelled meanwhile
            continue
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)
