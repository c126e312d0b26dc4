"""Helpers of the fault tests: a gateway's config file, and what a reader reassembled."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ssegate import Decoder, Event

#: The ``gateway`` fixture: ``with gateway(**settings) as url``.
Gateway = Callable[..., AbstractContextManager[str]]


def config(path: Path, *lines: str) -> str:
    """A TOML config for ``ssegate serve``: echo by default, the local model
    not preloaded, then ``lines``; returns its path."""
    text = "\n".join(['default_model = "echo"', *lines])
    if "[local]" not in text:
        text += "\n[local]\npreload = false"
    path.write_text(text + "\n")
    return str(path)


def events(response: httpx.Response) -> list[Event]:
    """Every event of a whole event-stream body."""
    decoder = Decoder()
    return decoder.feed(response.content) + decoder.close()


def seq(event_id: str | None) -> int:
    """The number of an event id (``"<epoch>-000000000042"`` -> 42)."""
    assert event_id
    return int(event_id.rpartition("-")[2])


@dataclass
class Reassembly:
    """What one reader got of one stream, in one format, over its connections."""

    format: str = "native"
    ids: list[int] = field(default_factory=list)  # of the events carrying text
    text: str = ""
    end: str | None = None  # "done", "error" or "[DONE]"
    error: dict[str, object] | None = None
    connections: int = 0
    last: Event | None = None  # the event that ended the stream

    def add(self, event: Event) -> bool:
        """Take one event; True once the stream's last event has come."""
        self.last = event
        if self.format == "native":
            if event.event == "token":
                self.ids.append(seq(event.id))
                self.text += json.loads(event.data)["text"]
            elif event.event in ("done", "error"):
                self.end = event.event
                if event.event == "error":
                    self.error = json.loads(event.data)
                return True
            return False
        if event.data == "[DONE]":  # openai
            self.end = "[DONE]"
            return True
        chunk = json.loads(event.data)
        if "error" in chunk:
            self.error = chunk["error"]
            return False
        content = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
        if content:
            self.ids.append(seq(event.id))
            self.text += content
        return False

    @property
    def repeated(self) -> int:
        return len(self.ids) - len(set(self.ids))

    def lost(self, expected_tokens: int) -> int:
        return max(expected_tokens - len(set(self.ids)), 0)
