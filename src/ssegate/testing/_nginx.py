"""A real nginx of the test's own, in front of gateway replicas.

``Nginx(site, extra=...)`` writes a whole ``nginx.conf`` into a temporary
directory around ``site`` (the ``upstream``/``server`` blocks a user would put
in ``sites-enabled``) and runs ``nginx -p DIR -c nginx.conf`` in the
foreground (``daemon off``), its pid, logs and temporary files in that
directory, so it needs no privilege and touches nothing of the machine's own
nginx. ``extra`` goes into the ``http`` block before ``site`` (a test's
shorter ``proxy_read_timeout``, say). The access log records, per request,
which upstream served it (``access_log()``), so a test can tell which replica
a connection reached. Stopped by its PID.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ._process import Started

__all__ = ["INSTALL_HINT", "Nginx", "find_nginx", "readme_site"]

INSTALL_HINT = (
    "no nginx found: run scripts/ensure-infra as root (Debian/Ubuntu: apt-get install "
    "nginx-light; macOS: brew install nginx)"
)

#: One access-log line per request: method, URI, the upstream that served it, status.
LOG_FORMAT = "'$request_method $request_uri $upstream_addr $status'"


#: What the README's nginx snippet names, replaced by the test's own addresses.
README_REPLICAS = ("127.0.0.1:8001", "127.0.0.1:8002")
README_LISTEN = "listen 80;"


def readme_site(readme: str, replicas: list[str], port: int) -> str:
    """The README's one ``nginx`` snippet with these replicas and listening port:
    nothing else changed (what the tests and benchmarks run is what users read)."""
    blocks = re.findall(r"```nginx\n(.*?)```", readme, re.DOTALL)
    if len(blocks) != 1:
        raise ValueError(f"the README has {len(blocks)} nginx snippets, not one")
    site = str(blocks[0])
    for placeholder, url in zip(README_REPLICAS, replicas, strict=True):
        if site.count(placeholder) != 1:
            raise ValueError(f"the README's nginx snippet names {placeholder} once")
        site = site.replace(placeholder, url.removeprefix("http://"))
    if site.count(README_LISTEN) != 1:
        raise ValueError(f"the README's nginx snippet has one {README_LISTEN!r}")
    return site.replace(README_LISTEN, f"listen 127.0.0.1:{port};")


def find_nginx() -> str | None:
    """The nginx executable (``/usr/sbin`` is not on every user's PATH)."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


class Nginx(Started):
    """An nginx process of our own serving ``site`` (a context manager)."""

    def __init__(self, site: str, *, port: int, extra: str = "", startup_timeout: float = 10.0):
        found = find_nginx()
        if found is None:
            raise RuntimeError(INSTALL_HINT)
        self.executable = found
        self.port = port
        self.startup_timeout = startup_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="ssegate-nginx-")
        self.directory = Path(self._tmp.name)
        # Run as root, nginx's workers drop to an unprivileged user: let them in.
        self.directory.chmod(0o755)
        self.config = self.directory / "nginx.conf"
        self.config.write_text(self._conf(site, extra))
        self._process: subprocess.Popen[bytes] | None = None

    def _conf(self, site: str, extra: str) -> str:
        d = self.directory
        temp = "\n".join(
            f"    {kind}_temp_path {d / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""daemon off;
worker_processes 1;
pid {d / "nginx.pid"};
error_log {d / "error.log"} warn;
events {{
    worker_connections 4096;
}}
http {{
    log_format upstreams {LOG_FORMAT};
    access_log {d / "access.log"} upstreams;
{temp}
{extra}
{site}
}}
"""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                self.executable,
                "-p", str(self.directory),
                "-c", str(self.config),
                "-e", str(self.directory / "error.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                pass
            if self._process.poll() is not None:
                _, err = self._process.communicate()
                raise RuntimeError(f"nginx exited: {err.decode(errors='replace').strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"nginx did not listen within {self.startup_timeout} s")
            time.sleep(0.02)

    def access_log(self) -> list[list[str]]:
        """The requests served so far, each as [method, uri, upstream, status]."""
        path = self.directory / "access.log"
        if not path.exists():
            return []
        return [line.split() for line in path.read_text().splitlines()]

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # fast shutdown: open streams are closed
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process.stderr is not None:
            process.stderr.close()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()
