"""``POST /v1/chat/completions`` and ``GET /v1/models``: the OpenAI-compatible surface.

Streaming answers are the generation's stream rendered as OpenAI chunks (every
event with its ``id:``), with ``X-Stream-Id`` and ``Link: </v1/streams/{id}?
format=openai>; rel="events"`` so a client whose connection drops resumes by
``GET`` instead of sending (and paying for) the request again.

The status is decided before the first byte: the route waits until the
provider accepted (or refused: OpenAI-shaped error, right status). Only while
the local model is still loading does it answer at once and keep the
connection alive with comments until the first token.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ..llm import Error, Finish, ReasoningDelta, Start, TextDelta, ToolCallEnd, Usage
from ..llm.formats import openai_usage
from ..protocol import Event
from ..streams import End
from ._auth import Principal
from ._begin import ChatCompletionBody, Started, begin, refusal
from ._errors import ApiError
from ._gateway import Gateway, gateway, principal
from ._reading import serve_generation
from ._records import from_record
from ._runner import Generation, Runner

__all__ = ["router"]

router = APIRouter(tags=["chat"])

_FINISH = {"other": "stop", "tool_calls": "tool_calls"}

T = TypeVar("T")

#: How long a streaming request waits for the provider's answer before it also
#: watches for its client leaving (a timer is cheaper than a task; a client that
#: leaves is then noticed this much later, well within the grace period).
WATCH_AFTER_S = 0.25


@router.post(
    "/v1/chat/completions",
    summary="Chat completion (OpenAI-compatible; stream or not)",
    response_model=None,
)
async def chat_completions(
    body: ChatCompletionBody,
    request: Request,
    who: Annotated[Principal, Depends(principal)],
) -> Response:
    # The gateway straight from the app, not as a dependency: FastAPI's solving
    # of each dependency costs every request more than the lookup itself.
    gw: Gateway = request.app.state.gateway
    started = await begin(gw, who, body)
    stream, generation = started.stream, started.generation
    # This request reads it (before any await: no grace timer fires).
    runner = gw.runner
    reader = _Reading(runner, stream)
    if not body.stream:
        try:
            answer = await _unless_gone(request, lambda: _complete(gw, started))
            return answer if answer is not None else Response(status_code=204)
        finally:
            reader.leave()
    try:
        if gw.models.answers_now(started.route):
            if not await _accepted_unless_gone(request, generation, reader, runner.loop):
                return Response(status_code=204)  # to nobody
        else:  # the local model is loading: answer now, keep-alives until it is ready
            gw.models.want_local()
        if generation.refused is not None:
            raise refusal(generation.refused)
    except BaseException:
        reader.leave()
        raise
    link = f"/v1/streams/{stream}?format=openai"
    if started.chat.include_usage:
        link += "&include_usage=true"
    return await serve_generation(
        gw,
        stream,
        request,
        format="openai",
        include_usage=started.chat.include_usage,
        headers={"X-Stream-Id": stream, "Link": f'<{link}>; rel="events"'},
        attached=True,
        new=True,
    )


class _Reading:
    """The request counted as a reader of ``stream`` until ``leave()`` (once)."""

    __slots__ = ("reading", "runner", "stream")

    def __init__(self, runner: Runner, stream: str) -> None:
        self.runner = runner
        self.stream = stream
        self.reading = True
        runner.attach(stream)

    def leave(self) -> None:
        if self.reading:
            self.reading = False
            self.runner.detach(self.stream)


async def _accepted_unless_gone(
    request: Request,
    generation: Generation,
    reader: _Reading,
    loop: asyncio.AbstractEventLoop | None,
) -> bool:
    """Wait until the provider accepted or refused; ``False`` if the client left first.

    A client that leaves stops being a reader (the grace period starts). On
    asyncio, if the provider has not answered within ``WATCH_AFTER_S``, one
    plain task watches the client while the route waits on for the provider
    (the generation ends with the grace period at the latest): a task group
    would cost every stream a cancel scope and a cancellation too. ``loop``:
    the runner's (the app's) asyncio loop, ``None`` on trio.
    """
    if loop is None:  # not asyncio (trio)

        async def accepted() -> bool:
            await generation.accepted.wait()
            return True

        if await _unless_gone(request, accepted) is None:
            reader.leave()
            return False
        return True

    # Most providers answer sooner than that: then no task at all, only an
    # entry in the loop's queue of waits (``_Late``: one timer for them all).
    watch = _Watch(request, reader)
    _Late.of(loop).add(watch)
    try:
        await generation.accepted.wait()
    finally:
        watch.settle()
    return reader.reading


class _Watch:
    """A task (once started) making ``reader`` leave when ``request``'s client does.

    An object, not closures: one allocation per request instead of two
    functions and a cell per variable they share. ``settle()`` once the wait
    is over: its task cancelled, or none started (``request`` is then None).
    """

    __slots__ = ("reader", "request", "task")

    def __init__(self, request: Request, reader: _Reading) -> None:
        self.request: Request | None = request
        self.reader: _Reading | None = reader
        self.task: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.task = loop.create_task(self._watch())

    def settle(self) -> None:
        task, self.task = self.task, None
        self.request = self.reader = None  # nothing held until its turn in the queue
        if task is not None:
            task.cancel()

    async def _watch(self) -> None:
        request, reader = self.request, self.reader
        assert request is not None
        assert reader is not None
        while (await request.receive())["type"] != "http.disconnect":
            pass
        reader.leave()


class _Late:
    """The waits for a provider on one loop, in the order they began: each still
    going on ``WATCH_AFTER_S`` seconds after it began starts its watch then.

    One loop timer for all of them, not a timer made and cancelled per stream
    start (the queue is in deadline order: one delay for all), and set only for
    a wait still going: a wait that ended leaves its settled watch in the
    queue, holding nothing, until a timer passes it. (Set at each next deadline
    whatever its wait, the timer fired once per stream start under a steady
    load, as nearly every provider answers within the first of them.)
    """

    __slots__ = ("loop", "queue", "timer")

    #: Deadlines this close are due (the loop's timers fire to the millisecond).
    SLACK_S = 0.001

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: deque[tuple[float, _Watch]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    @staticmethod
    def of(loop: asyncio.AbstractEventLoop) -> _Late:
        """``loop``'s (made on first use, for as long as the loop exists)."""
        last = _LATE[0]
        if last is not None and last.loop is loop:
            return last
        late = _LATES.get(loop)
        if late is None:
            late = _LATES[loop] = _Late(loop)
        _LATE[0] = late
        return late

    def add(self, watch: _Watch) -> None:
        when = self.loop.time() + WATCH_AFTER_S
        self.queue.append((when, watch))
        if self.timer is None:
            self.timer = self.loop.call_at(when, self._due)

    def _due(self) -> None:
        self.timer = None
        queue, loop = self.queue, self.loop
        now = loop.time() + self.SLACK_S
        while queue and queue[0][0] <= now:
            watch = queue.popleft()[1]
            if watch.request is not None:  # still waiting
                watch.start(loop)
        while queue and queue[0][1].request is None:  # ended: needs no timer
            queue.popleft()
        if queue:
            self.timer = loop.call_at(queue[0][0], self._due)


#: Each loop's waits (``_Late.of``), and the last asked for (a gateway has one loop).
_LATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Late] = weakref.WeakKeyDictionary()
_LATE: list[_Late | None] = [None]


async def _unless_gone(request: Request, work: Callable[[], Awaitable[T]]) -> T | None:
    """``await work()``, or ``None`` as soon as the client disconnects.

    Before the first byte nothing else listens to the connection: a client that
    gives up while the provider thinks must still count as gone, or it would
    hold the generation (and the upstream) as a reader nobody is.
    """
    result: T | None = None
    error: Exception | None = None
    async with anyio.create_task_group() as tasks:

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            tasks.cancel_scope.cancel()

        tasks.start_soon(watch)
        try:
            result = await work()
        except Exception as exc:  # raised as itself, not in the task group's ExceptionGroup
            error = exc
        tasks.cancel_scope.cancel()
    if error is not None:
        raise error
    return result


async def _complete(gw: Gateway, started: Started) -> Response:
    """Wait for the whole generation; one ``chat.completion`` object."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    start: Start | None = None
    usage: Usage | None = None
    finish: Finish | None = None
    error: Error | None = None
    async with aclosing(gw.hub.read(started.stream)) as items:  # type: ignore[type-var]
        async for item in items:
            if isinstance(item, End):
                break
            if not isinstance(item, Event):
                continue
            event = from_record(item)
            if isinstance(event, TextDelta):
                text.append(event.text)
            elif isinstance(event, ReasoningDelta):
                reasoning.append(event.text)
            elif isinstance(event, ToolCallEnd):
                calls.append(
                    {
                        "id": event.id,
                        "type": "function",
                        "function": {"name": event.name, "arguments": event.arguments},
                    }
                )
            elif isinstance(event, Start):
                start = event
            elif isinstance(event, Usage):
                usage = event
            elif isinstance(event, Finish):
                finish = event
            elif isinstance(event, Error):
                error = event
    refused = started.generation.refused
    if refused is not None:
        raise refusal(refused)
    if finish is None:
        code = error.code if error is not None else "cancelled"
        why = error.message if error is not None else "The generation was stopped."
        raise ApiError(502, f"The generation failed: {why}", code=code)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    body: dict[str, Any] = {
        "id": (start.id if start and start.id else f"chatcmpl-{started.stream}"),
        "object": "chat.completion",
        "created": start.created if start and start.created else int(time.time()),
        "model": start.model if start and start.model else started.chat.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _FINISH.get(finish.reason, finish.reason),
            }
        ],
    }
    if usage is not None:
        body["usage"] = openai_usage(usage)
    return JSONResponse(body, headers={"X-Stream-Id": started.stream})


@router.get("/v1/models", summary="The models this gateway routes")
async def models(
    gw: Annotated[Gateway, Depends(gateway)],
    who: Annotated[Principal, Depends(principal)],
) -> dict[str, Any]:
    gw.auth.require(who, "chat")
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "ssegate"}
            for name in gw.models.names()
        ],
    }
