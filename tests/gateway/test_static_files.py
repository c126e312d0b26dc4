"""``/ssegate.js`` and ``/ssegate.d.ts``: served from the package, no auth, revalidated by ETag."""

from __future__ import annotations

from pathlib import Path

import httpx
from gateway_support import settings

from ssegate.gateway import KeySettings, create_app
from ssegate.testing import serve

STATIC = Path(__file__).parents[2] / "src" / "ssegate" / "gateway" / "static"


def test_the_module_and_its_types_are_served_with_etag_and_no_auth() -> None:
    keys = [KeySettings(id="k1", key="k-secret-1234567890", scopes=["chat"])]
    with serve(create_app(settings(keys=keys))) as server, httpx.Client() as client:
        assert client.post(server.url + "/v1/chat/completions", json={}).status_code == 401
        for path, media_type in [
            ("/ssegate.js", "text/javascript; charset=utf-8"),
            ("/ssegate.d.ts", "application/typescript; charset=utf-8"),
        ]:
            response = client.get(server.url + path)
            assert response.status_code == 200
            assert response.content == (STATIC / path.lstrip("/")).read_bytes()
            assert response.headers["content-type"] == media_type
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-content-type-options"] == "nosniff"
            etag = response.headers["etag"]
            again = client.get(server.url + path, headers={"If-None-Match": etag})
            assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
            other = client.get(server.url + path, headers={"If-None-Match": '"other"'})
            assert other.status_code == 200
