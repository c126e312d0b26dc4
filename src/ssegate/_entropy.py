"""Random hex ids from the system's CSPRNG, a system call per 256 ids, not per id.

Stream ids and epochs are ``os.urandom`` bytes in hex: unguessable (a stream
id is all a reader needs to read a stream). Every ``os.urandom`` is a
``getrandom`` system call, two per stream start; here the bytes come from the
same call, 4 KiB at a time, each byte handed out once: the same bytes, so the
same unpredictability. Each thread has its own buffer (no byte can go to two
callers) and a forked child drops what it inherited, as ``random`` reseeds
(else parent and child would hand out the same ids).
"""

from __future__ import annotations

import os
import threading

from ._fork import forget_in_child

__all__ = ["random_hex"]

#: Bytes asked of the system at a time.
BATCH = 4096


class _Buffer(threading.local):
    data = b""
    at = 0


_buffer = _Buffer()


def random_hex(nbytes: int) -> str:
    """``os.urandom(nbytes).hex()``: ``2 * nbytes`` hex digits, never handed out before."""
    buffer = _buffer
    at = buffer.at
    end = at + nbytes
    data = buffer.data
    if end > len(data):
        forget_in_child(_forget)  # (once per 256 ids)
        data = buffer.data = os.urandom(max(BATCH, nbytes))
        at, end = 0, nbytes
    buffer.at = end
    return data[at:end].hex()


def _forget() -> None:
    _buffer.data = b""
    _buffer.at = 0
