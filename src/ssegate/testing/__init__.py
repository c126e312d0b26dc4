"""Public helpers for testing code built on ssegate (and ssegate itself)."""

from ._uvicorn import UvicornThread, serve

__all__ = ["UvicornThread", "serve"]
