"""Find a real Redis for tests, or start one.

``redis_url()`` yields, in this order: ``$REDIS_URL`` if set; ``redis://127.0.0.1:6379``
if something there answers ``PING``; else a ``redis-server`` found on ``PATH``,
started on a free port in a temporary directory (no persistence) and stopped
at the end. Never a fake: the store's behaviour under Redis is the point.

``RedisServer`` is the started kind, for tests that need to stop and restart
Redis under a client (with ``appendonly=True`` an acknowledged write survives
even ``kill -9``, as in production with ``appendfsync always``).

``LocalRedisCluster`` is a Redis Cluster of three masters on free loopback ports
(``redis-server --cluster-enabled yes`` each, joined by ``redis-cli --cluster
create``), its ``url`` the ``redis+cluster://`` one ``RedisStore`` takes.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ._process import Started

__all__ = ["LocalRedisCluster", "RedisServer", "ping_redis", "redis_url"]

INSTALL_HINT = (
    "no Redis server found: set REDIS_URL, run one on 127.0.0.1:6379, or install "
    "redis-server (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"
)


def ping_redis(host: str = "127.0.0.1", port: int = 6379, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers ``PING`` at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (``port + 10000``) is free too."""
    for _ in range(100):
        port = random.randrange(20000, 55000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisServer(Started):
    """A ``redis-server`` process of our own on 127.0.0.1 (a context manager)."""

    def __init__(
        self,
        *,
        port: int = 0,
        appendonly: bool = False,
        cluster: bool = False,
        executable: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        found = executable or shutil.which("redis-server")
        if found is None:
            raise RuntimeError(INSTALL_HINT)
        self.executable = found
        self.port = port or _free_port()
        self.appendonly = appendonly
        self.cluster = cluster
        self.startup_timeout = startup_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="ssegate-redis-")
        self.directory = self._tmp.name
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The ``redis-server`` command line."""
        args = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.directory,
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args

    def start(self) -> None:
        if self.running:
            raise RuntimeError("this redis-server is already running")
        self._process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.startup_timeout
        while not ping_redis("127.0.0.1", self.port, timeout=0.5):
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self._process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server did not answer within {self.startup_timeout} s")
            time.sleep(0.02)

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the server (``kill=True``: ``SIGKILL``, as when a machine dies)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def restart(self) -> None:
        """Stop and start again on the same port and directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()


@contextmanager
def redis_url() -> Iterator[str]:
    """The URL of a Redis to test against, starting one if needed (see the module doc)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
    elif ping_redis():
        yield "redis://127.0.0.1:6379/0"
    else:
        with RedisServer() as server:
            yield server.url


class LocalRedisCluster(Started):
    """A Redis Cluster of ``masters`` nodes (no replicas) on 127.0.0.1 (a context manager)."""

    def __init__(self, masters: int = 3, *, startup_timeout: float = 20.0) -> None:
        self.cli = shutil.which("redis-cli")
        if self.cli is None:
            raise RuntimeError(INSTALL_HINT.replace("redis-server", "redis-server and redis-cli"))
        self.nodes = [RedisServer(port=_free_cluster_port(), cluster=True) for _ in range(masters)]
        self.startup_timeout = startup_timeout

    @property
    def url(self) -> str:
        """Any one node's address: the client learns the others from it."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.nodes]

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                self.create_command(),
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                timeout=self.startup_timeout,
            )  # fmt: skip
            deadline = time.monotonic() + self.startup_timeout
            while not all(self._ready(node) for node in self.nodes):
                if time.monotonic() > deadline:
                    raise TimeoutError("the Redis Cluster did not become ready")
                time.sleep(0.05)
        except BaseException:
            self.close()
            raise

    def create_command(self) -> list[str]:
        """The ``redis-cli`` command that joins the nodes, the hash slots shared out."""
        assert self.cli is not None
        return [
            self.cli, "--cluster", "create", *self.addresses,
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip

    def _ready(self, node: RedisServer) -> bool:
        """Whether ``node`` sees the cluster whole (every slot served by a known node)."""
        assert self.cli is not None
        info = subprocess.run(
            [self.cli, "-p", str(node.port), "cluster", "info"],
            capture_output=True, text=True, timeout=5,
        ).stdout  # fmt: skip
        return "cluster_state:ok" in info and f"cluster_known_nodes:{len(self.nodes)}" in info

    def close(self) -> None:
        for node in self.nodes:
            node.close()
