"""``ssegate publish TOPIC DATA``: publish one event to a gateway's topic.

``DATA`` is sent as the event's data, as given (a JSON text stays that text).
The gateway's URL and API key come from ``--url``/``SSEGATE_URL`` and
``--api-key``/``SSEGATE_API_KEY``. Prints the event's id (what subscribers
resume after); a refusal prints the gateway's message and exits 1.
"""

from __future__ import annotations

from typing import Annotated

import httpx
import typer

from ._app import app

__all__ = ["publish"]


@app.command()
def publish(
    topic: Annotated[str, typer.Argument(help="The topic, e.g. prices/eurusd.")],
    data: Annotated[str, typer.Argument(help="The event's data.")],
    event: Annotated[
        str, typer.Option("--event", "-e", help="The event type [message].")
    ] = "message",
    url: Annotated[
        str, typer.Option(envvar="SSEGATE_URL", help="The gateway's base URL.")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None, typer.Option(envvar="SSEGATE_API_KEY", help="An API key with 'publish'.")
    ] = None,
) -> None:
    """Publish DATA to TOPIC's subscribers."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    target = f"{url.rstrip('/')}/v1/topics/{topic}"
    try:
        response = httpx.post(
            target, json={"event": event, "data": data}, headers=headers, timeout=30
        )
    except httpx.HTTPError as exc:
        typer.echo(f"ssegate publish: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict) or "id" not in body:
        message = response.text[:500]
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = str(body["error"].get("message"))
        typer.echo(f"ssegate publish: {response.status_code}: {message}", err=True)
        raise typer.Exit(1)
    typer.echo(body["id"])
