"""Per-process state a forked child must not keep: dropped in the child, as
CPython's ``random`` reseeds, so parent and child never share it."""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["forget_in_child"]

_registered: set[Callable[[], None]] = set()


def forget_in_child(forget: Callable[[], None]) -> None:
    """Have every child forked from now on call ``forget`` (registered once;
    call it at first use, not at import: importing ssegate has no side effects)."""
    if forget in _registered:
        return
    _registered.add(forget)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=forget)
