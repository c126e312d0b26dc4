"""``Started``: a process of the tests' own as a context manager (start, then close)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["Started"]


class Started(ABC):
    """``with Thing() as thing:`` starts it, and closes it (stops it, cleans up) after."""

    @abstractmethod
    def start(self) -> None:
        """Start the process; return once it serves."""

    @abstractmethod
    def close(self) -> None:
        """Stop the process and remove what it left."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
