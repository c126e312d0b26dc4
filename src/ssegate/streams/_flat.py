"""Kept events out of the cyclic collector's sight.

A store or a ring that keeps events for readers that lag keeps many of them,
and an ``Event`` (a tuple subclass) is an object the collector tracks for as
long as it lives: each collection that reaches the generation it sits in walks
it while the event loop, every stream on it, waits. A plain tuple holding only
str, int and None is untracked by the first collection that walks it, so kept
history is made of those: ``flatten`` lays events out in one tuple, their
data, event, id and retry one after the other (one tuple, not nested ones: a
pass that finds a tuple holding a tuple it has not untracked yet keeps it
tracked, one level of nesting per pass), and ``events_of`` makes them again
for a reader.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from typing import TypeAlias

from ..protocol import Event

#: Events (and whatever leads them) laid out in one plain tuple of str and int.
Flat: TypeAlias = tuple[object, ...]

#: The fields of an event in a ``Flat``: data, event, id, retry.
FIELDS = 4

_new = tuple.__new__


def flatten(events: Iterable[tuple[object, ...]], *head: object) -> Flat:
    """``head``, then the fields of each event (an ``Event`` or a plain tuple of its fields)."""
    return (*head, *chain.from_iterable(events))


def events_of(flat: Flat, start: int, stop: int) -> list[Event]:
    """The events laid out in ``flat[start:stop]``, made again."""
    return [_new(Event, flat[i : i + FIELDS]) for i in range(start, stop, FIELDS)]
