"""``ssegate serve``: run the gateway.

Every flag is also an environment variable (``SSEGATE_HOST``, ``SSEGATE_PORT``,
``SSEGATE_CONFIG``, ``SSEGATE_REDIS_URL``, ``SSEGATE_WORKERS``); the rest of the
settings come from ``SSEGATE_*`` variables and the ``--config`` TOML file
(``ssegate.gateway.load_settings``). The settings are checked before anything
binds: a bad file, a public address with no API keys, or ``--workers`` without
Redis stop the command with a message saying what to change (exit status 2),
an unreachable Redis with exit status 1.

The collector. A gateway is a long-lived process holding thousands of streams,
each ~170 objects the collector tracks, and every token a stream waits for makes
~20 more that live until it comes (the waits' futures, generators' steps, the
page and event it brings). With CPython's defaults a full collection walked the
whole heap several times a minute, every stream stopped meanwhile. Once the app
has started, ``serve`` (``serving_collector``) collects and freezes what is alive
(``ssegate.server.freeze_startup_objects``: FastAPI's routes, pydantic's models,
~100 000 objects that no later collection walks), sets the thresholds to
``GC_THRESHOLDS`` and collects the young generation on a clock
(``ssegate.server.pace_collections``: every 0.1 s, the middle one every other
time). The clock is needed because CPython counts the young generation as new
objects minus freed ones, old ones included: with streams ending as others
start the count stays below its threshold while the young generation
grows to hold every stream opened since, and the collection that finally comes
walks them all (in the 300 s soak at 10 000 streams, young and middle collections
of 200 to 550 ms, freeing nothing). On the clock each collection walks a tenth of
a second's objects. Objects surviving a middle collection reach the old
generation, and a full collection comes once ``GC_THRESHOLDS[2]`` middle ones
have run (at least ~33 minutes on the clock, and only if the old generation has
grown by a quarter); streams leave no reference cycles (see ``ssegate.server``),
so what waits for it is garbage of other libraries' making. Measured in
docs/gateway.md ("The collector") and docs/RELIABILITY.md ("Soak").

The log records. Each stream logs two lines (uvicorn's access line and the
gateway's own), and by default every ``logging`` record also asks the system for
the process id (a system call), the current thread and the multiprocessing
process name, and walks the stack for the caller's file and line: fields that no
line ``serve`` writes shows. ``lean_log_records`` stops that (the lines read the
same). And each line was a system call of its own (``StreamHandler`` writes
and flushes per record): while the app runs (``log_writes_per_turn``) the
lines the event loop's thread logs are gathered and written at the end of the
loop's turn, one call for all of them, in their order; other threads' lines
are written at once, as before. Both lines of a stream, formatted and written
to a file: 25 µs of CPU before, 19.5 µs with both. And while the app runs the
two lines' formatters are lean twins of uvicorn's access formatter and
logging's own (``_formats``: no record copies, the time's text once a second),
the same text.

The running library. anyio's primitives (cancel scopes, events, timeouts,
``anyio.sleep``) ask sniffio which library runs each time they are made or
entered, and sniffio finds asyncio by ``asyncio.current_task()``: ~2 µs a call,
several per stream start and per token wait. While the app runs
(``asyncio_known``) sniffio is told, for the loop's thread, by its own
``thread_local.name`` (the way trio tells it): the same answer at once.

The connection's addresses. uvicorn asks each new connection's socket for
its addresses (five system calls and two socket objects under uvloop) where
the transport has them already: ``serve`` runs uvicorn's httptools protocol
with its ``connection_made`` reading the transport's (``_protocol``), the same
addresses.

The running loop. On Python 3.11 each ``asyncio.get_running_loop()`` is a
``getpid`` system call; a stream start made a few (its session, its shutdown
subscription). While the app runs (``loop_known``) they are answered from the
loop's thread (``ssegate.server._running``).

The listen queue. uvicorn's default backlog (2 048) is less than the clients of
one replica that died reconnecting to another at once, or the starts waiting
while a gateway catches up (the soak counted 200 000 SYNs dropped, and every
dropped client tries again later): the kernel drops what overflows. ``serve``
asks for ``BACKLOG``, which the kernel caps at its own limit
(``net.core.somaxconn``: 4 096 on Linux since 5.4).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from ..server._running import loop_known
from ._app import app
from ._formats import lean_formatters
from ._lines import lean_lines

__all__ = [
    "TurnWrites",
    "asyncio_known",
    "lean_log_records",
    "log_writes_per_turn",
    "serve",
    "worker_app",
]

#: Where the parent process hands the worker processes their flags.
_FLAG_ENV = {
    "host": "SSEGATE_HOST",
    "port": "SSEGATE_PORT",
    "store": "SSEGATE_STORE",
    "workers": "SSEGATE_WORKERS",
    "allow_public_without_auth": "SSEGATE_ALLOW_PUBLIC_WITHOUT_AUTH",
}


#: The collector's thresholds once the gateway has started (see the module docstring):
#: the young and middle generations are also collected on a clock.
GC_THRESHOLDS = (2_000, 10, 10_000)

#: The listen queue ``serve`` asks for (see the module docstring): as long as the
#: system allows (``listen()`` caps it at ``net.core.somaxconn`` silently).
BACKLOG = 65_535


@asynccontextmanager
async def serving_collector() -> AsyncIterator[None]:
    """The collector as ``serve`` runs it, from entering until leaving: objects
    alive now frozen, ``GC_THRESHOLDS``, the young generation collected on a clock
    (``ssegate.server.pace_collections``). Enter it in the server's event loop once
    start-up is over."""
    from ..server import freeze_startup_objects, pace_collections

    freeze_startup_objects()
    gc.set_threshold(*GC_THRESHOLDS)
    pacing = asyncio.get_running_loop().create_task(
        pace_collections(), name="ssegate: paced collections"
    )
    try:
        yield
    finally:
        pacing.cancel()


def lean_log_records() -> None:
    """Make log records without the fields ``serve``'s formats never show
    (process id, thread, process name, caller's file and line; see the module
    docstring): what each line says is unchanged."""
    logging.logProcesses = False
    logging.logThreads = False
    logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):  # Python 3.12+
        logging.logAsyncioTasks = False
    # The documented switch (logging's source): no findCaller() per record.
    logging._srcfile = None


class TurnWrites:
    """``stream``, its writes from ``loop``'s thread written once per turn of the loop.

    The first write of a turn schedules the write of all of them at the turn's
    end (``flush_pending``); ``flush`` from that thread leaves it to then.
    Writes from other threads, or once the loop is closed, go to ``stream`` at once.
    """

    def __init__(self, stream: TextIO, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self.loop = loop
        self.thread = threading.get_ident()
        self.pending: list[str] = []

    def write(self, text: str) -> int:
        if threading.get_ident() != self.thread:
            return self.stream.write(text)
        if not self.pending:
            try:
                self.loop.call_soon(self.flush_pending)
            except RuntimeError:  # the loop is closed: nothing would write them
                return self.stream.write(text)
        self.pending.append(text)
        return len(text)

    def flush(self) -> None:
        if threading.get_ident() != self.thread:
            self.stream.flush()

    def flush_pending(self) -> None:
        """Write what this turn gathered, in one call."""
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the stream is gone (closed pipe): so are the lines
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)  # name, encoding, ... of the stream


@contextmanager
def log_writes_per_turn() -> Iterator[None]:
    """While inside (in the running event loop): every plain ``logging.StreamHandler``
    (``serve``'s root handler, uvicorn's) writes through a ``TurnWrites``; after,
    what is pending is written and each has its stream back."""
    loop = asyncio.get_running_loop()
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    swapped: list[tuple[logging.StreamHandler[TextIO], TextIO, TurnWrites]] = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if type(handler) is logging.StreamHandler and not any(
                h is handler for h, _, _ in swapped
            ):
                stream = handler.stream
                writes = TurnWrites(stream, loop)
                handler.setStream(writes)
                swapped.append((handler, stream, writes))
    try:
        yield
    finally:
        for handler, stream, writes in swapped:
            handler.acquire()
            try:
                writes.flush_pending()
                handler.stream = stream
            finally:
                handler.release()


@contextmanager
def asyncio_known() -> Iterator[None]:
    """While inside (in a running asyncio loop): sniffio answers ``"asyncio"`` in
    this thread without looking (its ``thread_local.name``; see the module
    docstring). Elsewhere (another library runs, or a name is set already, or no
    sniffio): nothing changes."""
    try:
        import sniffio
    except ImportError:  # anyio then asks asyncio itself
        yield
        return
    try:
        running: str | None = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        running = None
    if running != "asyncio" or sniffio.thread_local.name is not None:
        yield
        return
    sniffio.thread_local.name = "asyncio"
    try:
        yield
    finally:
        sniffio.thread_local.name = None


def tuned_for_serving(app: Any) -> Any:
    """``app`` (a Starlette/FastAPI app), which once its start-up is over runs the
    collector as ``serve`` does (``serving_collector``)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        with (
            lean_formatters(),
            log_writes_per_turn(),
            lean_lines(),
            asyncio_known(),
            loop_known(),
        ):
            async with inner(app) as state, serving_collector():
                yield state

    app.router.lifespan_context = lifespan
    return app


def _http() -> str:
    """uvicorn's ``http`` setting: httptools' protocol without its per-connection
    socket look-ups (``_protocol``) where it applies, else uvicorn's choice."""
    try:
        from ._protocol import http_protocol
    except ImportError:  # no httptools: uvicorn's h11
        return "auto"
    return http_protocol()


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"ssegate serve: {message}", err=True)
    return typer.Exit(code)


def worker_app() -> Any:
    """The app of one ``--workers`` process: settings from the parent's environment."""
    from ..gateway import create_app, load_settings

    lean_log_records()
    return tuned_for_serving(create_app(load_settings(os.environ.get("SSEGATE_CONFIG") or None)))


def _check_redis(url: str) -> None:
    import redis

    # Redis Cluster: the node named answers for itself (the store finds the others).
    node = url.replace("+cluster://", "://", 1)
    client = redis.Redis.from_url(node, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise _fail(f"cannot reach Redis at {_safe(url)}: {exc}", 1) from None
    finally:
        client.close()


def _safe(url: str) -> str:
    """``url`` without a password."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(envvar="SSEGATE_HOST", help="Address to bind [127.0.0.1].")
    ] = None,
    port: Annotated[
        int | None, typer.Option(envvar="SSEGATE_PORT", min=0, max=65535, help="Port [8000].")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="SSEGATE_CONFIG", help="A TOML settings file."),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            envvar="SSEGATE_REDIS_URL",
            help="Keep streams in Redis (needed by --workers and by replicas).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(envvar="SSEGATE_WORKERS", min=1, help="Processes to run (needs Redis)."),
    ] = None,
    allow_public_without_auth: Annotated[
        bool,
        typer.Option(
            "--allow-public-without-auth",
            envvar="SSEGATE_ALLOW_PUBLIC_WITHOUT_AUTH",
            help="Bind a non-loopback address with no API keys configured.",
        ),
    ] = False,
) -> None:
    """Serve the gateway: OpenAI-compatible chat, resumable streams, topics, metrics."""
    from ..gateway import ConfigError, create_app, is_loopback, load_settings

    flags: dict[str, Any] = {
        "host": host,
        "port": port,
        "store": redis_url,
        "workers": workers,
        "allow_public_without_auth": allow_public_without_auth or None,
    }
    try:
        settings = load_settings(config, **flags)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    public = not is_loopback(settings.host)
    if public and not settings.keys and not settings.allow_public_without_auth:
        raise _fail(
            f"refusing to serve {settings.host} with no API keys: anyone who can reach it "
            "could use it. Configure keys (see README, 'The gateway'), bind 127.0.0.1, "
            "or pass --allow-public-without-auth."
        )
    if settings.workers > 1 and settings.store == "memory":
        raise _fail(
            f"--workers {settings.workers} needs Redis: each worker must see every stream. "
            "Pass --redis-url redis://127.0.0.1:6379/0 (or set SSEGATE_REDIS_URL)."
        )
    if settings.store != "memory":
        _check_redis(settings.store)

    import uvicorn

    lean_log_records()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    base = f"http://{settings.host}:{settings.port}"
    typer.echo(
        f"ssegate gateway  API {base}/v1  docs {base}/docs  (model: {settings.default_model})"
    )
    typer.echo(f"pages  chat {base}/  topics {base}/topics  dashboard {base}/dashboard")
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        "timeout_graceful_shutdown": settings.shutdown_timeout,
        "backlog": BACKLOG,
        "http": _http(),
    }
    if settings.workers > 1:
        if config is not None:
            os.environ["SSEGATE_CONFIG"] = str(config)
        for name, value in flags.items():
            if value is not None:
                os.environ[_FLAG_ENV[name]] = str(value)
        uvicorn.run(
            "ssegate.cli._serve:worker_app", factory=True, workers=settings.workers, **options
        )
    else:
        uvicorn.run(tuned_for_serving(create_app(settings)), **options)
    sys.stdout.flush()
