"""Decoder throughput: ssegate's Decoder against httpx-sse and sseclient-py, in one run.

The stream is shaped like an LLM answer: OpenAI ``chat.completion.chunk`` JSON
events of about 150 bytes, ``data: {...}\\n\\n``, 16 MB in all, fed in 4 KiB
chunks, 64 KiB chunks and one event per chunk. Each peer is driven the way its
users drive it:

- httpx-sse ``iter_sse()``: an ``httpx.Response`` streaming the same chunks,
  read through ``EventSource(response).iter_sse()``;
- httpx-sse's bare decoder: its ``SSELineDecoder`` + ``SSEDecoder`` fed text
  from an incremental UTF-8 decoder;
- sseclient-py: ``SSEClient(chunks).events()``.

Also one 8 MiB event fed in 4 KiB chunks, and ssegate's own resumable events
(``event: token``, ``id:``, JSON data) in 4 KiB chunks. Every figure is the median of several
repeats; ratios are against httpx-sse's ``iter_sse()``. The machine is shared,
so absolute MB/s move from run to run; the ratios, measured side by side, are
the result.

    python benchmarks/decoder.py [--quick]
"""

from __future__ import annotations

import argparse
import codecs
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import httpx_sse
import sseclient
from _report import Report
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from ssegate import Decoder

MB = 1_000_000


def llm_stream(total: int) -> bytes:
    words = ["Hello", " world", ",", " the", " answer", " is", " 42", ".", " 世界", " ok"]
    out = []
    size = 0
    i = 0
    while size < total:
        chunk = {
            "id": "chatcmpl-9x2Bq7LmZ",
            "object": "chat.completion.chunk",
            "created": 1732230000,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": words[i % 10]}, "finish_reason": None}],
        }
        line = b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
        out.append(line)
        size += len(line)
        i += 1
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def native_stream(total: int) -> bytes:
    """ssegate's own resumable events: ``event: token``, ``id:``, JSON data."""
    out = []
    size = 0
    i = 0
    while size < total:
        text = json.dumps({"text": [" the", " answer", " is", " 42", " 世界"][i % 5]})
        line = b"event: token\nid: %d\ndata: %s\n\n" % (i, text.encode())
        out.append(line)
        size += len(line)
        i += 1
    return b"".join(out)


def split_fixed(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def split_events(raw: bytes) -> list[bytes]:
    return [part + b"\n\n" for part in raw.split(b"\n\n")[:-1]]


# -- the contestants: each takes the chunks and returns the number of events --


def run_ssegate(chunks: list[bytes]) -> int:
    d = Decoder()
    n = 0
    feed = d.feed
    for chunk in chunks:
        n += len(feed(chunk))
    return n + len(d.close())


class _Chunks(httpx.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)


def run_httpx_sse(chunks: list[bytes]) -> int:
    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_Chunks(chunks)
    )
    n = 0
    for _ in httpx_sse.EventSource(response).iter_sse():
        n += 1
    return n


def run_httpx_sse_bare(chunks: list[bytes]) -> int:
    text = codecs.getincrementaldecoder("utf-8")("replace")
    lines = SSELineDecoder()
    sse = SSEDecoder()
    n = 0
    for chunk in chunks:
        for line in lines.decode(text.decode(chunk)):
            if sse.decode(line) is not None:
                n += 1
    for line in lines.flush():
        if sse.decode(line) is not None:
            n += 1
    return n


def run_sseclient(chunks: list[bytes]) -> int:
    n = 0
    for _ in sseclient.SSEClient(iter(chunks)).events():
        n += 1
    return n


def run_floor(chunks: list[bytes]) -> int:
    """Not a contestant: split on blank lines and decode, ignoring the spec."""
    tail = b""
    n = 0
    for chunk in chunks:
        parts = (tail + chunk).split(b"\n\n")
        tail = parts.pop()
        n += len([p.decode() for p in parts])
    return n


CONTESTANTS: list[tuple[str, Callable[[list[bytes]], int]]] = [
    ("ssegate Decoder", run_ssegate),
    ("httpx-sse iter_sse()", run_httpx_sse),
    ("httpx-sse bare decoder", run_httpx_sse_bare),
    ("sseclient-py", run_sseclient),
    ("(floor: split + decode, not spec)", run_floor),
]


def timed(fn: Callable[[list[bytes]], int], chunks: list[bytes], repeats: int) -> tuple[float, int]:
    times = []
    count = 0
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        count = fn(chunks)
        times.append(time.perf_counter() - start)
    return statistics.median(times), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller stream, fewer repeats")
    args = parser.parse_args()
    total = 2 * MB if args.quick else 16 * MB
    repeats = 3 if args.quick else 7

    raw = llm_stream(total)
    report = Report("decoder", "Decoding an LLM-shaped stream, MB/s (median of repeats).")
    print(f"decoder benchmark: {len(raw) / MB:.1f} MB LLM-shaped stream, median of {repeats}")
    print(
        f"python {sys.version.split()[0]}, httpx-sse {_version('httpx-sse')}, "
        f"sseclient-py {_version('sseclient-py')}"
    )
    chunkings = [
        ("4 KiB chunks", split_fixed(raw, 4096)),
        ("64 KiB chunks", split_fixed(raw, 65536)),
        ("one event per chunk", split_events(raw)),
    ]
    native = native_stream(total // 4)
    chunkings.append(("native events with event:/id:, 4 KiB chunks", split_fixed(native, 4096)))
    for label, chunks in chunkings:
        size = native if label.startswith("native") else raw
        print(f"\n{label} ({len(chunks)} chunks, {len(size) / MB:.1f} MB)")
        print(f"  {'decoder':36} {'MB/s':>8} {'x httpx-sse':>12}")
        results = [(name, *timed(fn, chunks, repeats)) for name, fn in CONTESTANTS]
        baseline = next(t for name, t, _ in results if name == "httpx-sse iter_sse()")
        expected = results[0][2]
        for name, t, count in results:
            mark = "" if count == expected else f"  (saw {count} events, expected {expected})"
            print(f"  {name:36} {len(size) / MB / t:8.1f} {baseline / t:11.2f}x{mark}")
        rates = {name: len(size) / MB / t for name, t, _ in results}
        report.table(label, "MB/s", rates, higher_is_better=True)

    print("\none 8 MiB event in 4 KiB chunks")
    big = b"data: " + b"x" * (8 * 1024 * 1024) + b"\n\n"
    chunks = split_fixed(big, 4096)
    print(f"  {'decoder':36} {'ms':>8} {'x httpx-sse':>12}")
    results = [(name, *timed(fn, chunks, max(1, repeats // 2))) for name, fn in CONTESTANTS[:4]]
    baseline = next(t for name, t, _ in results if name == "httpx-sse iter_sse()")
    for name, t, count in results:
        mark = "" if count == 1 else f"  (saw {count} events)"
        print(f"  {name:36} {t * 1000:8.1f} {baseline / t:11.2f}x{mark}")
    big_ms = {name: t * 1000 for name, t, _ in results}
    report.table("one 8 MiB event in 4 KiB chunks", "ms", big_ms, higher_is_better=False)
    report.save()


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
