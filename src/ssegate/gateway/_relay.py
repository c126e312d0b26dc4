"""What a generation's producer notes of the events it relays: metrics and outcome.

``Runner._produce`` relays a provider's events into the store on one of two
paths (reading and settling the appends after each read, or appending from
the upstream connection's callback, ``Relay.take``); both note each read's events here, in the same
order, so the metrics (time to first token, the gaps between tokens, live
stats) and the outcome are the same whichever path ran.
"""

from __future__ import annotations

from collections.abc import Callable
from json.encoder import encode_basestring as _string  # what to_record uses
from typing import TYPE_CHECKING, cast

from ..llm import Error, Finish, LLMEvent, ReasoningDelta, TextDelta, ToolCallStart, Usage
from ..llm.providers import HTTPProvider
from ..protocol import Event
from ..streams import CANCELLED, DONE, ERROR
from ._metrics import Metrics
from ._records import TEXT_HEAD, TEXT_RECORD, to_record

if TYPE_CHECKING:
    from ._runner import Generation

__all__ = ["NOTED", "Relay", "http_provider"]

_new = tuple.__new__

#: The event types ``Relay.note`` must see (the others change nothing).
NOTED = frozenset({Finish, Error, Usage})


class Relay:
    """One generation's notes: ``read`` for each read's events, before they are
    appended; ``note`` for each event of a type in ``NOTED``, once appended."""

    __slots__ = (
        "accepted",
        "add",
        "clock",
        "generation",
        "inter_token",
        "last_token",
        "live",
        "metrics",
        "model",
        "outcome",
        "usage",
    )

    def __init__(
        self, generation: Generation, metrics: Metrics, clock: Callable[[], float]
    ) -> None:
        self.generation = generation
        self.metrics = metrics
        self.live = metrics.live
        self.model = model = generation.label or generation.model
        # The model's series, looked up once per generation, not once per token.
        self.inter_token = metrics.inter_token.labels(model)
        self.clock = clock
        self.last_token: float | None = None
        self.usage: Usage | None = None
        #: The stream's outcome so far (``CANCELLED``: neither finished nor failed).
        self.outcome = CANCELLED
        self.accepted = False
        self.add: Callable[[Event], None] = _untaken

    def read(self, batch: list[LLMEvent]) -> None:
        """The events of one read (not empty), before they are appended."""
        generation = self.generation
        if not self.accepted:
            self.accepted = True
            generation.accepted.set()
        # The tokens of one read are counted once: they came at one time, so
        # the gaps after the first are 0 (what a token at a time recorded;
        # tests hold the figures equal).
        now = self.clock()
        tokens = 0
        for event in batch:
            kind = type(event)
            if kind is TextDelta or kind is ReasoningDelta or kind is ToolCallStart:
                tokens += 1
        if tokens:
            generation.tokens += tokens
            model = self.model
            inter_token = self.inter_token
            last_token = self.last_token
            if last_token is None:
                generation.first_token_at = now
                ttft = now - generation.started_at
                self.metrics.ttft_of[model].observe(ttft)
                self.live.tokens(model, now, tokens, ttft=ttft)
            else:
                gap = now - last_token
                inter_token.observe(gap)
                self.live.tokens(model, now, tokens, gap=gap)
            if tokens > 1:
                inter_token.observe_zeros(tokens - 1)
            self.last_token = now

    def note(self, event: LLMEvent) -> None:
        """An event of a type in ``NOTED``, appended."""
        kind = type(event)
        if kind is Usage:
            self.usage = event  # type: ignore[assignment]
        elif kind is Finish:
            self.outcome = DONE
            self.generation.end_reason = event.reason  # type: ignore[union-attr]
        elif kind is Error:
            self.outcome = ERROR
            self.generation.end_reason = "upstream_error"
            metrics = self.metrics
            code = metrics.error_code(event.code)  # type: ignore[union-attr]
            metrics.upstream_errors.labels(self.model, code).inc()

    def taker(self, add: Callable[[Event], None]) -> Callable[[list[LLMEvent]], None]:
        """What takes each read's events on the callback path (``drive_into``'s
        sink): ``take``, appending each with ``add`` (an immediate appender's)."""
        self.add = add
        return self.take

    def take(self, batch: list[LLMEvent]) -> None:
        """A read's events, noted and appended at once (see ``taker``)."""
        generation = self.generation
        if generation.stop_reason is not None:
            return  # stopped: its task is being cancelled, nothing more is kept
        last_token = self.last_token
        if len(batch) == 1 and last_token is not None:
            event = batch[0]
            if type(event) is TextDelta:
                # Nearly every read: one token, not the first. ``read``'s
                # figures for it (a gap), then its record, without the loops.
                now = self.clock()
                gap = now - last_token
                generation.tokens += 1
                self.inter_token.observe(gap)
                self.live.gap(self.model, now, gap)
                self.last_token = now
                self.add(
                    _new(Event, (f"{TEXT_HEAD}{_string(event.text)}}}", TEXT_RECORD, None, None))
                )
                return
        self.read(batch)
        add = self.add
        for event in batch:
            if type(event) is TextDelta:  # nearly every event: ``to_record``'s first case
                add(_new(Event, (f"{TEXT_HEAD}{_string(event.text)}}}", TEXT_RECORD, None, None)))
                continue
            add(to_record(event))
            if type(event) in NOTED:
                self.note(event)


def http_provider(provider: object) -> HTTPProvider | None:
    """``provider`` if it streams through ``drive`` as ``HTTPProvider`` does (not
    a provider that reads its own way, nor one that changes ``stream_batches``)."""
    kind = type(provider)
    if (
        getattr(kind, "stream_into", None) is HTTPProvider.stream_into
        and getattr(kind, "stream_batches", None) is HTTPProvider.stream_batches
    ):
        return cast(HTTPProvider, provider)  # its methods are HTTPProvider's
    return None


def _untaken(event: Event) -> None:
    raise RuntimeError("Relay.take before Relay.taker")
