"""Server-Sent Events from a Django view: ``StreamingHttpResponse`` over ``wsgi_stream``.

A one-file Django project, for the demo. Run it:
    python examples/django_view.py runserver
Watch it: curl -N http://127.0.0.1:8000/ticks?count=5

In a real project only the view and its URL are needed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="example-only",
        MIDDLEWARE=[],
    )

from django.http import HttpRequest, StreamingHttpResponse
from django.urls import path

from ssegate import Event
from ssegate.server import SSE_HEADERS, wsgi_stream


def ticks(request: HttpRequest) -> StreamingHttpResponse:
    count = int(request.GET.get("count", "10"))
    interval = float(request.GET.get("interval", "0"))

    def tick() -> Iterator[Event]:
        for n in range(count):
            if n:
                time.sleep(interval)
            yield Event(str(n), event="tick", id=str(n))

    return StreamingHttpResponse(wsgi_stream(tick(), ping=15.0, retry=2000), headers=SSE_HEADERS)


urlpatterns = [path("ticks", ticks)]


def application(environ: dict[str, object], start_response: object) -> object:
    """The WSGI entry point (``gunicorn examples.django_view:application``)."""
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()(environ, start_response)  # type: ignore[arg-type]


if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
