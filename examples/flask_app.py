"""Server-Sent Events from Flask: a ``Response`` over ``wsgi_stream``.

Run it:   flask --app examples.flask_app run --with-threads
Watch it: curl -N http://127.0.0.1:5000/ticks?count=5

Each open stream holds one server thread (two with keep-alives on), so use a
threaded server; ``close()`` runs the producer's ``finally`` when the client goes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Flask, Response, request

from ssegate import Event
from ssegate.server import SSE_HEADERS, wsgi_stream

app = Flask(__name__)


@app.get("/ticks")
def ticks() -> Response:
    count = int(request.args.get("count", "10"))
    interval = float(request.args.get("interval", "0"))

    def tick() -> Iterator[Event]:
        for n in range(count):
            if n:
                time.sleep(interval)
            yield Event(str(n), event="tick", id=str(n))

    return Response(wsgi_stream(tick(), ping=15.0, retry=2000), headers=SSE_HEADERS)
