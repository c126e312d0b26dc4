"""Real sockets on 127.0.0.1 for the outbound-HTTP tests (providers and EventSource):
a scripted raw server, a CONNECT proxy, a self-signed certificate."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trustme


@dataclass
class Request:
    """One request as the server read it off the wire."""

    head: bytes
    body: bytes

    @property
    def request_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        out = []
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == name.lower():
                out.append(value.strip())
        return out


class Conn:
    """One accepted connection, as a handler sees it."""

    def __init__(self, sock: socket.socket, server: RawServer) -> None:
        self.sock = sock
        self.server = server
        self.buf = b""

    def read_request(self) -> Request | None:
        """The next request (head and Content-Length body), or None at EOF."""
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        size = int(m.group(1)) if m else 0
        while len(rest) < size:
            data = self.sock.recv(65536)
            if not data:
                return None
            rest += data
        self.buf = rest[size:]
        request = Request(head, rest[:size])
        self.server.requests.append(request)
        return request

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """Block until the peer closes the connection (True) or ``timeout`` passes."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            return False
        return True


@dataclass
class RawServer:
    """A TCP server on 127.0.0.1 that runs ``handler(conn)`` per connection."""

    handler: Callable[[Conn], None]
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    errors: list[BaseException] = field(default_factory=list)

    @contextlib.contextmanager
    def run(self) -> Iterator[str]:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.05)  # so the acceptor notices ``stop`` (close does not wake it)
        port = listener.getsockname()[1]
        stop = threading.Event()
        threads: list[threading.Thread] = []
        socks: list[socket.socket] = []

        def serve(sock: socket.socket) -> None:
            try:
                self.handler(Conn(sock, self))
            except OSError:
                pass  # the client went away: what several tests make it do
            except BaseException as exc:  # surfaced by the test, not lost in a thread
                self.errors.append(exc)
            finally:
                sock.close()

        def accept() -> None:
            while not stop.is_set():
                try:
                    sock, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                sock.settimeout(None)
                self.connections += 1
                socks.append(sock)
                t = threading.Thread(target=serve, args=(sock,), daemon=True)
                threads.append(t)
                t.start()

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop.set()
            acceptor.join(10)
            listener.close()
            for s in socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            for t in threads:
                t.join(10)
        if self.errors:
            raise self.errors[0]


class ConnectProxy:
    """A tiny HTTP CONNECT proxy on 127.0.0.1 that records the targets asked for."""

    def __init__(self) -> None:
        self.targets: list[str] = []

    def handle(self, conn: Conn) -> None:
        request = conn.read_request()
        if request is None:
            return
        method, target, _ = request.request_line.split(" ")
        self.targets.append(f"{method} {target}")
        if method != "CONNECT":
            conn.send(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            return
        host, _, port = target.rpartition(":")
        with socket.create_connection((host, int(port))) as upstream:
            conn.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if conn.buf:
                upstream.sendall(conn.buf)
            pipe(conn.sock, upstream)


def pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    peers = {a: b, b: a}
    while True:
        readable, _, _ = select.select([a, b], [], [], 30)
        if not readable:
            return
        for s in readable:
            data = s.recv(65536)
            if not data:
                return
            peers[s].sendall(data)


def make_certificate(directory: Path, san: str = "IP:127.0.0.1") -> tuple[str, str]:
    """A key and certificate for ``san`` (``IP:…`` or ``DNS:…``), issued by a
    throwaway CA; the certificate file holds the chain, so it serves both as the
    server's certificate and as the client's trust store."""
    kind, _, name = san.partition(":")
    if kind not in ("IP", "DNS"):
        raise ValueError(f"san must start with IP: or DNS:, got {san!r}")
    ca = trustme.CA()
    leaf = ca.issue_cert(name)
    key, cert = directory / "key.pem", directory / "cert.pem"
    leaf.private_key_pem.write_to_path(str(key))
    with cert.open("wb") as out:
        for blob in leaf.cert_chain_pems:
            out.write(blob.bytes())
        out.write(ca.cert_pem.bytes())
    return str(key), str(cert)
