"""ssegate._http: the HTTP decisions every layer shares (no sockets needed)."""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator

import pytest

from ssegate import ProtocolError
from ssegate._http import (
    DECODED_CHUNK,
    MAX_RETRY_AFTER,
    Decompressor,
    aread_capped,
    check_headers,
    parse_retry_after,
    read_capped,
    retry_after,
)

NOW = 1_000_000_000.0  # 2001-09-09 01:46:40 UTC


# -- Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("0", 0.0),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("86400", 86400.0),
        ("86401", MAX_RETRY_AFTER),  # longer than a day: capped
        ("9" * 400, MAX_RETRY_AFTER),  # not inf, not an overflow
        ("Sun, 09 Sep 2001 01:47:00 GMT", 20.0),
        ("Sun, 09 Sep 2001 01:47:00 -0000", 20.0),  # "zone unknown": UTC, not local
        ("Sun, 09 Sep 2001 03:47:00 +0200", 20.0),
        ("Sun, 09 Sep 2001 01:46:00 GMT", 0.0),  # in the past: now
        ("Sunday, 09-Sep-01 01:47:10 GMT", 30.0),  # RFC 850
        ("Sun Sep  9 01:47:05 2001", 25.0),  # asctime
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER),
        ("-5", None),
        ("-0", None),
        ("1.5", None),
        ("1e3", None),
        ("soon", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits are not digits here
        ("", None),
        ("Sun, 99 Foo 2001 01:47:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local zone set to UTC+5 (where the -0000 bug showed)."""
    monkeypatch.setenv("TZ", "Asia/Karachi")
    time.tzset()
    assert time.timezone == -5 * 3600
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_dates_do_not_depend_on_the_local_zone() -> None:
    assert parse_retry_after("Sun, 09 Sep 2001 01:47:00 -0000", NOW) == 20.0
    assert parse_retry_after("Sun, 09 Sep 2001 01:47:00 GMT", NOW) == 20.0
    assert parse_retry_after("Sun Sep  9 01:47:00 2001", NOW) == 20.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # the precise one wins
        ({"retry-after-ms": "250.5"}, 0.2505),
        ({"retry-after-ms": "-1", "retry-after": "9"}, 9.0),  # ignored: falls back
        ({"retry-after-ms": "nan", "retry-after": "9"}, 9.0),
        ({"retry-after-ms": "inf"}, None),
        ({"retry-after-ms": "1e400"}, None),
        ({"retry-after-ms": "9" * 400}, MAX_RETRY_AFTER),
        ({"retry-after": "Sun, 09 Sep 2001 01:47:00 GMT"}, 20.0),
    ],
)
def test_retry_after_headers(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(headers, NOW) == seconds


# -- header checks --------------------------------------------------------------------


def test_ordinary_headers_pass() -> None:
    check_headers({"Authorization": "Bearer sk-abc", "X-Tab": "a\tb", "Accept": "*/*"})


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Authorization": "Bearer sk-abc\r\nX-Injected: yes"}, "header 'Authorization'"),
        ({"authorization": "Bearer sk\n"}, "header 'authorization'"),
        ({"X-Key": "a\x00b"}, "header 'X-Key'"),
        ({"X-Key": "a\x7f"}, "header 'X-Key'"),
        ({"X-Key\r\nX-Injected": "yes"}, "not a valid header name"),
        ({"": "x"}, "not a valid header name"),
        ({"X Key": "x"}, "not a valid header name"),
    ],
)
def test_unsafe_headers_are_refused_by_name(headers: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        check_headers(headers)
    assert "sk-abc" not in str(caught.value)  # never echo what may be a secret


# -- capped bodies --------------------------------------------------------------------


class Source:
    """Chunks to read, then maybe an error; records whether it was closed."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.read = 0
        self.closed = False

    def sync(self) -> Iterator[bytes]:
        try:
            for chunk in self.chunks:
                self.read += 1
                yield chunk
            if self.error is not None:
                raise self.error
        finally:
            self.closed = True

    async def aio(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.chunks:
                self.read += 1
                yield chunk
            if self.error is not None:
                raise self.error
        finally:
            self.closed = True


@pytest.mark.anyio
async def test_capped_readers_stop_at_the_limit_and_close() -> None:
    for sync in (True, False):
        src = Source([b"abcd", b"efgh", b"ijkl", b"mnop"])
        body = read_capped(src.sync(), 6) if sync else await aread_capped(src.aio(), 6)
        assert (body, src.read, src.closed) == (b"abcdef", 2, True)


@pytest.mark.anyio
async def test_capped_readers_keep_what_came_before_an_expected_error() -> None:
    for sync in (True, False):
        src = Source([b"abc"], OSError("reset"))
        if sync:
            body = read_capped(src.sync(), 100, errors=(OSError,))
        else:
            body = await aread_capped(src.aio(), 100, errors=(OSError,))
        assert (body, src.closed) == (b"abc", True)


@pytest.mark.anyio
async def test_capped_readers_let_other_errors_through() -> None:
    with pytest.raises(KeyError):
        read_capped(Source([b"a"], KeyError("x")).sync(), 10, errors=(OSError,))
    with pytest.raises(KeyError):
        await aread_capped(Source([b"a"], KeyError("x")).aio(), 10, errors=(OSError,))


# -- decompression ---------------------------------------------------------------------

BODY = b"".join(b'data: {"n": %d}\n\n' % i for i in range(20_000))


def inflate(decoder: Decompressor, data: bytes, step: int = 1000) -> bytes:
    out = []
    for i in range(0, len(data), step):
        for piece in decoder.feed(data[i : i + step]):
            assert len(piece) <= DECODED_CHUNK
            out.append(piece)
    decoder.close()
    return b"".join(out)


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("Deflate", lambda b: zlib.compress(b)),
        ("deflate", lambda b: zlib.compress(b, wbits=-15)),  # raw deflate, as some send it
    ],
)
def test_decompressor_round_trip(encoding: str, compress: object) -> None:
    data = compress(BODY)  # type: ignore[operator]
    assert inflate(Decompressor(encoding), data) == BODY
    assert inflate(Decompressor(encoding), data, step=1) == BODY


def test_identity_needs_no_decoder() -> None:
    assert [Decompressor.needed(e) for e in ("identity", "", " gzip ", "br")] == [
        False,
        False,
        True,
        True,
    ]


@pytest.mark.parametrize("cut", [1, 4, 8, 100])
def test_a_truncated_body_is_an_error(cut: int) -> None:
    data = gzip.compress(BODY)[:-cut]
    decoder = Decompressor("gzip")
    got = b"".join(piece for piece in decoder.feed(data))
    assert BODY.startswith(got)
    with pytest.raises(ProtocolError, match="cut short"):
        decoder.close()


def test_corrupt_body_and_trailing_garbage_and_unknown_encodings() -> None:
    with pytest.raises(ProtocolError, match="bad gzip body"):
        list(Decompressor("gzip").feed(b"not gzip at all"))
    with pytest.raises(ProtocolError, match="bytes after the end"):
        list(Decompressor("gzip").feed(gzip.compress(b"x") + b"junk"))
    with pytest.raises(ProtocolError, match="unsupported Content-Encoding 'br'"):
        Decompressor("br")


def test_a_bomb_is_refused_with_bounded_memory() -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    bomb = b"".join([*(comp.compress(block) for _ in range(256)), comp.flush()])  # 256 MiB
    decoder = Decompressor("gzip")
    out = 0

    def drain() -> None:
        nonlocal out
        for piece in decoder.feed(bomb):  # all of it in one call
            out += len(piece)

    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="decompression bomb"):
            drain()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 1 << 20 <= out <= 2 << 20  # refused right after the first free MiB
    # Memory follows the input (zlib copies what it has not read yet), not the
    # 256 MiB of output.
    assert peak < 3 * len(bomb) + 4 * DECODED_CHUNK, peak


def test_a_stream_compressed_event_by_event_is_not_a_bomb() -> None:
    event = b'data: {"id":"chatcmpl-1","choices":[{"delta":{"content":" the"}}]}\n\n'
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    data = b"".join(comp.compress(event) + comp.flush(zlib.Z_SYNC_FLUSH) for _ in range(50_000))
    data += comp.flush()
    assert inflate(Decompressor("gzip"), data, step=4096) == event * 50_000


# -- TLS trust ------------------------------------------------------------------------


@pytest.mark.parametrize("trust_env", [True, False])
def test_the_default_context_verifies_as_the_standard_library_does(trust_env: bool) -> None:
    import ssl

    from ssegate._http import ResumingSSLContext, default_ssl_context

    ours, stock = default_ssl_context(trust_env=trust_env), ssl.create_default_context()
    assert isinstance(ours, ResumingSSLContext)
    assert ours.verify_mode == stock.verify_mode == ssl.CERT_REQUIRED
    assert ours.check_hostname is stock.check_hostname is True
    assert ours.options == stock.options
    assert ours.verify_flags == stock.verify_flags
    assert ours.minimum_version == stock.minimum_version
    assert ours.cert_store_stats()["x509_ca"] > 0
