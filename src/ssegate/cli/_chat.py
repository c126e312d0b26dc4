"""``ssegate chat PROMPT``: stream one answer to the terminal.

The model is ``local`` (the embedded SmolLM2-135M, no key, no network) unless
``--model`` names another: ``PROVIDER:MODEL`` (``openai:gpt-4o-mini``,
``ollama:llama3.2``, ``deepseek:deepseek-chat``...) or the path of a llama GGUF
file to run locally. The answer's text goes to stdout as it is generated;
errors, notes, and with ``--stats`` one JSON line of timings, go to stderr
(with a spinner while the model loads and reads the prompt, on a terminal).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import typer

from .._exceptions import ProviderError
from ..llm import ChatRequest, Error, Finish, TextDelta, Usage
from ..llm.providers import PROVIDERS, Provider, create_provider
from ._app import app
from ._terminal import silence_stdout, spinner
from ._usage import checked_url, fail, read_stdin

__all__ = ["ExitCode", "chat"]


class ExitCode(IntEnum):
    """How ``ssegate chat`` ended (its process exit status)."""

    OK = 0  #: the answer is complete (or cut at --max-tokens), or its reader went away
    FAILED = 1  #: the generation failed after it started
    USAGE = 2  #: bad command-line arguments (an empty prompt, a malformed URL...)
    REFUSED = 3  #: the provider refused or could not be reached before answering
    INTERRUPTED = 130  #: Ctrl-C


def _provider(
    model: str, *, base_url: str | None, api_key: str | None, engine: str, n_ctx: int
) -> tuple[Provider, str]:
    """The provider and the model name to ask it for, from ``--model``.

    A known provider's prefix wins over the ``.gguf`` ending: llama.cpp's
    server names its models after their files, so ``openai:smollm2.gguf`` is
    a remote model, not a path.
    """
    name, sep, remote_model = model.partition(":")
    remote_name = bool(sep) and name in PROVIDERS and name != "local"
    options: dict[str, Any] = {}
    if not remote_name and (model == "local" or model.endswith(".gguf")):
        name, remote_model = "local", "local"
        options = {"engine_kind": engine, "n_ctx": n_ctx}
        if model != "local":
            if not Path(model).is_file():
                fail(f"--model {model!r}: no GGUF file at {model}")
            options["model_path"] = model
    elif not remote_name or not remote_model:
        fail(
            f"--model {model!r}: use 'local', a .gguf path, or PROVIDER:MODEL with PROVIDER one "
            f"of {', '.join(p for p in PROVIDERS if p != 'local')}"
        )
    else:
        if base_url is not None:
            options["base_url"] = base_url
        if api_key is not None:
            options["api_key"] = api_key
    try:
        return create_provider(name, **options), remote_model
    except ValueError as exc:
        fail(f"--model {model!r}: {exc}")
    except ProviderError as exc:  # e.g. no key for a provider that needs one
        fail(str(exc), ExitCode.REFUSED)


class _Answer:
    """The answer as written so far: whether a line of it is open on stdout."""

    def __init__(self) -> None:
        self.line_open = False

    def write(self, text: str) -> None:
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
            self.line_open = not text.endswith("\n")

    def end_line(self) -> None:
        """End the answer's last line (at the end, or when it is cut short)."""
        sys.stdout.write("\n")
        sys.stdout.flush()
        self.line_open = False


async def _run(
    provider: Provider, request: ChatRequest, answer: _Answer, *, stats: bool, model: str
) -> ExitCode:
    load_s = 0.0
    engine = getattr(provider, "engine", None)
    try:
        if engine is not None:  # the local provider: load the model first, timed apart
            started = time.perf_counter()
            with spinner("Loading the model…"):
                await engine()
            load_s = time.perf_counter() - started
        started = time.perf_counter()
        first_at: float | None = None
        last_at = started
        pieces = 0
        tokens: int | None = None
        finish = "unknown"
        code = ExitCode.OK
        with contextlib.ExitStack() as waiting:
            # Until the first token: the prompt is read (prefilled), which for
            # a long prompt on the local model takes seconds.
            waiting.enter_context(
                spinner("Reading the prompt…" if engine is not None else "Waiting for the answer…")
            )
            async for event in provider.stream(request):
                if isinstance(event, TextDelta):
                    waiting.close()
                    last_at = time.perf_counter()
                    if first_at is None:
                        first_at = last_at
                    pieces += 1
                    answer.write(event.text)
                elif isinstance(event, Usage) and event.output_tokens is not None:
                    tokens = event.output_tokens
                elif isinstance(event, Finish):
                    finish = event.reason
                elif isinstance(event, Error):
                    waiting.close()
                    answer.end_line()
                    typer.echo(f"error: {event.message} ({event.code})", err=True)
                    finish = "error"
                    code = ExitCode.FAILED
        if code is ExitCode.OK:
            answer.end_line()
        if finish == "length":
            typer.echo(
                f"note: the answer stopped at --max-tokens {request.max_tokens}; "
                "raise it for a longer one",
                err=True,
            )
    except ProviderError as exc:
        typer.echo(f"error: {exc}", err=True)
        return ExitCode.REFUSED
    finally:
        await provider.aclose()
    if stats:
        count = tokens if tokens is not None else pieces
        ttft = (first_at - started) if first_at is not None else None
        decode = (last_at - first_at) if first_at is not None else 0.0
        report = {
            "ttft_s": round(ttft, 4) if ttft is not None else None,
            "tokens": count,
            # the decode rate after the first token
            "tokens_per_s": round((count - 1) / decode, 2) if count > 1 and decode > 0 else None,
            "load_s": round(load_s, 4),
            "model": model,
            "finish_reason": finish,
        }
        typer.echo(json.dumps(report), err=True)
    return code


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask; - reads it from stdin.")],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            envvar="SSEGATE_CHAT_MODEL",
            help="'local' (the embedded model), a .gguf path, or PROVIDER:MODEL.",
        ),
    ] = "local",
    max_tokens: Annotated[
        int,
        typer.Option("--max-tokens", min=1, envvar="SSEGATE_MAX_TOKENS", help="Answer length cap."),
    ] = 256,
    system: Annotated[
        str | None,
        typer.Option(
            "--system", envvar="SSEGATE_SYSTEM_PROMPT", help="The system message (instructions)."
        ),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature",
            min=0.0,
            envvar="SSEGATE_TEMPERATURE",
            help="0 is greedy; default: the model's.",
        ),
    ] = None,
    stats: Annotated[
        bool,
        typer.Option(
            "--stats", envvar="SSEGATE_STATS", help="End with one JSON line of timings on stderr."
        ),
    ] = False,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            envvar="SSEGATE_BASE_URL",
            help="The provider's API URL (http:// or https://).",
            callback=lambda value: None if value is None else checked_url(value, "--base-url"),
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="SSEGATE_API_KEY", help="The provider's API key."),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            envvar="SSEGATE_ENGINE",
            help="Local engine: numpy (default), llamacpp, or auto (llama.cpp if installed).",
        ),
    ] = "numpy",
    n_ctx: Annotated[
        int,
        typer.Option("--n-ctx", min=16, envvar="SSEGATE_N_CTX", help="Local context size."),
    ] = 2048,
) -> None:
    """Stream the answer to PROMPT from a model (by default the embedded local one).

    The answer goes to stdout; errors, a note when it stops at --max-tokens,
    and --stats go to stderr.

    Exit status: 0 the answer is complete, or cut at --max-tokens, or its
    reader went away (`| head`); 1 the generation failed after it started;
    2 bad arguments (an empty prompt, a malformed URL, an unknown model);
    3 the provider refused or could not be reached before answering;
    130 interrupted (Ctrl-C).
    """
    if prompt == "-":
        prompt = read_stdin("the prompt").rstrip("\r\n")
        if not prompt.strip():
            fail("the prompt read from stdin is empty")
    elif not prompt.strip():
        fail("the prompt is empty: say what to ask (or - to read it from stdin)")
    if engine not in ("numpy", "llamacpp", "auto"):
        fail(f"--engine {engine!r}: use numpy, llamacpp or auto")
    kind: Literal["numpy", "llamacpp", "auto"] = engine  # type: ignore[assignment]
    provider, model_name = _provider(
        model, base_url=base_url, api_key=api_key, engine=kind, n_ctx=n_ctx
    )
    messages = [{"role": "user", "content": prompt}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    request = ChatRequest(
        model=model_name, messages=messages, temperature=temperature, max_tokens=max_tokens
    )
    answer = _Answer()
    try:
        code = anyio.run(lambda: _run(provider, request, answer, stats=stats, model=model))
    except KeyboardInterrupt:
        # The shell's prompt goes on a line of its own, not after half a sentence.
        with contextlib.suppress(OSError):
            if answer.line_open:
                answer.end_line()
            elif sys.stderr.isatty():
                sys.stderr.write("\n")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except BrokenPipeError:
        # The reader went away (`ssegate chat ... | head -1`): that is its answer.
        silence_stdout()
        code = ExitCode.OK
    raise typer.Exit(code)
