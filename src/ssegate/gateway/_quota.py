"""``TopicQuota``: how many topics each key may create.

A topic lives until the store forgets it (the memory store: until the process
exits), so without a count one key could create topics until memory runs out.
Past ``limits.max_topics_per_key`` a publish to a *new* topic is a 429;
publishing to topics that exist is never refused. The count is per process
(replicas each count what was created through them).
"""

from __future__ import annotations

from collections import Counter

from ..streams import StreamStore
from ._auth import Principal
from ._errors import ApiError

__all__ = ["TopicQuota"]


class TopicQuota:
    """The topics each ``Principal.bucket`` created through this process.

    Memory is bounded: the names of topics known here (at most the limit per
    bucket, plus those other replicas created) and a count per bucket.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: set[str] = set()
        self._created: Counter[str] = Counter()

    async def admit(self, store: StreamStore, who: Principal, topic: str, stream: str) -> None:
        """Let ``who`` publish to ``topic`` (kept as ``stream``); ``ApiError`` 429
        when it would be one topic too many for ``who``."""
        if stream in self._known:
            return
        if not (await store.info(stream)).exists:
            if self._created[who.bucket] >= self.limit:
                raise ApiError(
                    429,
                    f"This key created {self.limit} topics already (limits.max_topics_per_key);"
                    f" {topic!r} would be one more. Publish to the topics it has.",
                    code="too_many_topics",
                    param="topic",
                )
            self._created[who.bucket] += 1
        self._known.add(stream)
