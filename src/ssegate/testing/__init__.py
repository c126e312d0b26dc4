"""Public helpers for testing code built on ssegate (and ssegate itself)."""

from ._store_contract import check_stream_store
from ._upstream import FakeUpstream, RecordedRequest, Reply
from ._uvicorn import UvicornThread, serve

__all__ = [
    "FakeUpstream",
    "RecordedRequest",
    "Reply",
    "UvicornThread",
    "check_stream_store",
    "serve",
]
