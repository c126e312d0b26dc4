"""``make run``: the embedded model answers, streamed over SSE end to end.

Until the gateway lands, this is the most complete thing ssegate shows: a
Starlette app on a real uvicorn (127.0.0.1) exposes ``POST /chat``, which runs
the embedded SmolLM2-135M (no key, no network) through the ``local`` provider
and streams the answer as native ssegate events (``token``, ``usage``,
``done``) with ``EventSourceResponse``; ssegate's ``EventSource`` POSTs each
question and prints the tokens as they arrive.

    python examples/demo.py ["your question" ...] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ssegate import Event, EventSource, EventSourceResponse, ProviderError
from ssegate.llm import ChatRequest
from ssegate.llm.formats import create_formatter
from ssegate.llm.providers import create_provider, stream_batches
from ssegate.local import load_engine
from ssegate.testing import serve

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea."]


def make_app() -> Starlette:
    async def chat(request: Request) -> Response:
        provider = request.app.state.provider
        try:
            body = await request.json()
            chat_request = ChatRequest(
                model="local",
                messages=[{"role": "user", "content": body["prompt"]}],
                max_tokens=int(body.get("max_tokens", 128)),
                temperature=0.0,
            )
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": {"message": f"bad request: {exc}"}}, status_code=400)

        async def events() -> AsyncIterator[Event]:
            formatter = create_formatter("native")
            async for batch in stream_batches(provider, chat_request):
                for llm_event in batch:
                    for event in formatter.format(llm_event):
                        yield event

        return EventSourceResponse(events(), ping=15.0)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Load the model before serving (1-2 s), in a thread, once for all requests.
        engine = await anyio.to_thread.run_sync(load_engine)
        app.state.provider = create_provider("local", engine=engine)
        try:
            yield
        finally:
            await app.state.provider.aclose()
            engine.close()

    return Starlette(routes=[Route("/chat", chat, methods=["POST"])], lifespan=lifespan)


def ask(url: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    """POST one question; print the answer as it streams; return what was measured."""
    start = time.perf_counter()
    first: float | None = None
    stats: dict[str, Any] = {}
    body = {"prompt": prompt, "max_tokens": max_tokens}
    with EventSource(url, method="POST", json=body, reconnect=False) as source:
        for event in source.until_done():
            if event.event == "token":
                if first is None:
                    first = time.perf_counter() - start
                print(event.json()["text"], end="", flush=True)
            elif event.event == "usage":
                stats["usage"] = event.json()
            elif event.event == "done":
                stats["finish_reason"] = event.json()["finish_reason"]
            elif event.event == "error":
                raise ProviderError(event.json()["message"])
    print()
    stats["ttft_s"] = round(first or 0.0, 3)
    stats["total_s"] = round(time.perf_counter() - start, 3)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("questions", nargs="*", default=QUESTIONS)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()

    with serve(make_app()) as server:
        url = server.url + "/chat"
        print(f"ssegate demo: the embedded model behind POST {url}", file=sys.stderr)
        for question in args.questions:
            print(f"\n> {question}", file=sys.stderr)
            stats = ask(url, question, args.max_tokens)
            print(json.dumps(stats), file=sys.stderr)


if __name__ == "__main__":
    main()
