"""CORS on a stream start's response head, for a request with no ``Origin``.

Starlette's ``CORSMiddleware`` looks at every response's start: for a request
without an ``Origin`` header (every API client's, the SDKs', the benchmarks')
all it does is add ``Vary: Origin`` (after any ``Vary`` the response has). It
gets there through a ``MutableHeaders`` over the message, a ``KeyError`` raised
and caught looking the request's ``Origin`` up, ``getlist`` and ``__setitem__``:
~50 000 instructions, ~2 % of a relayed stream start's. ``lean_send`` does the
same to the message in a few steps, and leaves every request with an
``Origin`` to Starlette's own ``send``.

Only for the Starlette code it was written against (fingerprints of 1.10's
``CORSMiddleware.send``, ``MutableHeaders.__setitem__``, ``Headers.getlist``
and ``Headers.__getitem__``): with any other, ``lean_send`` gives Starlette's
``send`` itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware

from ._guard import fingerprint

__all__ = ["CorsSend", "lean_send"]

CorsSend = Callable[[Any, Any, Headers], Awaitable[None]]

#: sha256 of Starlette's code that ``_LeanSend`` does the work of (1.10).
_FINGERPRINTS = {
    "CORSMiddleware.send": "852097035ef056354641ba7e48c644964be8ead6d411fb0de8c437523c045bcb",
    "MutableHeaders.__setitem__": (
        "042ca976e234afecbb7ad0302593a957eb853b495432212994252160de929787"
    ),
    "Headers.getlist": "ab69b1dd2c4eaf35af58adfc00f8057eaf578e02c9c19b4c8b2a109d04e90d1e",
    "Headers.__getitem__": "102cba58b08b606d872358c971a75de7b58704f3d85904521601ab5826661a67",
}

_KNOWN = {
    "CORSMiddleware.send": CORSMiddleware.send,
    "MutableHeaders.__setitem__": MutableHeaders.__setitem__,
    "Headers.getlist": Headers.getlist,
    "Headers.__getitem__": Headers.__getitem__,
}


def lean_send(cors: CORSMiddleware) -> CorsSend:
    """``cors.send`` (``(message, send, request_headers)``), made lean for a request
    without ``Origin`` where Starlette's code is the one known here."""
    if any(fingerprint(_KNOWN[name]) != known for name, known in _FINGERPRINTS.items()):
        return cors.send
    return _LeanSend(cors.send)


class _LeanSend:
    """``CORSMiddleware.send`` with the no-``Origin`` case done here."""

    __slots__ = ("general",)

    def __init__(self, general: CorsSend) -> None:
        self.general = general

    def __call__(self, message: Any, send: Any, request_headers: Headers) -> Awaitable[None]:
        # (The names as a dict's keys: looked for without a Python step per header.)
        if message["type"] != "http.response.start" or b"origin" in dict(request_headers.raw):
            return self.general(message, send, request_headers)
        # What Starlette does then: MutableHeaders over the message's headers (a
        # list of them, put back in the message), "Vary" set to its values and
        # "Origin" joined (the first entry replaced, the others removed, or one
        # added at the end).
        message.setdefault("headers", [])
        raw = message["headers"] = list(message["headers"])
        found = [i for i, (key, _) in enumerate(raw) if key == b"vary"]
        value = b", ".join([*(raw[i][1] for i in found), b"Origin"])
        for i in reversed(found[1:]):
            del raw[i]
        if found:
            raw[found[0]] = (b"vary", value)
        else:
            raw.append((b"vary", value))
        return send(message)  # type: ignore[no-any-return]
