"""Guards on other libraries' code where the gateway does their work its own way.

Where a module repeats what a library function does (in fewer steps), it does
so only for the code it was written against: ``fingerprint`` of each such
function, compared with the one recorded when it was written. Another version
of the library, and the library's own way runs.
"""

from __future__ import annotations

import hashlib
from types import CodeType
from typing import Any

__all__ = ["fingerprint"]


def fingerprint(function: Any) -> str:
    """A function's code (bytecode, constants, names; a nested function's or
    comprehension's code by its own fingerprint), as sha256 hex."""
    return _of(function.__code__)


def _of(code: CodeType) -> str:
    consts = tuple(_of(c) if isinstance(c, CodeType) else c for c in code.co_consts)
    parts = (code.co_code, repr(consts).encode(), repr(code.co_names).encode())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()
