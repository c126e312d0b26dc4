"""What a server's finished connections left to the cyclic collector (gateway and server tests)."""

from __future__ import annotations

import gc
import time
from typing import Any

__all__ = ["SERVER_MODULES", "cyclic_garbage"]

#: The modules whose objects a finished stream must not leave in reference cycles.
SERVER_MODULES = ("uvicorn", "starlette", "fastapi", "ssegate", "httptools", "h11", "anyio")


def cyclic_garbage(server: Any, wait: float = 10.0) -> list[str]:
    """Once ``server`` (``ssegate.testing.serve``'s) has let go of every connection
    (it closes each after its last byte and forgets it on the next loop turn): the
    types of ``SERVER_MODULES`` a collection finds in reference cycles, named, sorted.

    Call it with the collector off since the streams began (``gc.disable()``), so
    that what they left is still there to find."""
    connections = server.server.server_state.connections
    deadline = time.monotonic() + wait
    while connections:
        assert time.monotonic() < deadline, "the server kept its connections"
        time.sleep(0.01)
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        kinds = {type(obj) for obj in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return sorted(
        f"{kind.__module__}.{kind.__qualname__}"
        for kind in kinds
        if kind.__module__.startswith(SERVER_MODULES)
    )
