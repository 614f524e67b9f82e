"""The web UI at /ui/: its static files, served from the package, and the one read-only
endpoint it needs beyond the public API (`/ui/api/activity`).

The files (appliance/ui/) are read once, at construction, with a gzip copy of each: there
is no build step and nothing comes from elsewhere. The shell (HTML, script, style) is open
like /healthz, since it holds no data; everything it shows comes from API calls that carry
the key (the middleware lets `/ui` and its assets through, never `/ui/api/`). A strict
Content-Security-Policy allows only this origin's scripts, styles and requests, so text a
model wrote can never run as script even if the renderer had a flaw.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import falcon
import falcon.asgi
import orjson

from appliance.api.access import caller_of
from appliance.api.unavailable import Unavailable
from appliance.domain.activity import ActivityLog
from appliance.domain.errors import NotFound
from appliance.wire.bounds import check_text

TYPES: Final = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
              "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


@dataclass(frozen=True, slots=True)
class Asset:
    content_type: str
    body: bytes
    gzipped: bytes
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of appliance/ui by name."""
    out: dict[str, Asset] = {}
    for entry in resources.files("appliance").joinpath("ui").iterdir():
        suffix = entry.name[entry.name.rfind("."):]
        if entry.is_file() and suffix in TYPES:
            body = entry.read_bytes()
            out[entry.name] = Asset(TYPES[suffix], body, gzip.compress(body, 9, mtime=0),
                                    '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return out


def _headers(resp: falcon.asgi.Response) -> None:
    resp.set_header("Content-Security-Policy", CSP)
    resp.set_header("X-Content-Type-Options", "nosniff")
    resp.set_header("Referrer-Policy", "no-referrer")


class StaticResource:
    def __init__(self, assets: dict[str, Asset]) -> None:
        self._assets = assets

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._send(req, resp, "index.html")

    async def on_get_asset(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        self._send(req, resp, name)

    def _send(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        asset = self._assets.get(name)
        if asset is None:
            raise NotFound(f"No file '{name}' in the UI", param="path")
        _headers(resp)
        resp.set_header("Cache-Control", "no-cache")  # revalidated each time: an upgrade shows at once
        resp.set_header("ETag", asset.etag)
        resp.set_header("Vary", "Accept-Encoding")
        resp.content_type = asset.content_type
        if req.get_header("If-None-Match") == asset.etag:
            resp.status = falcon.HTTP_304
            return
        if "gzip" in (req.get_header("Accept-Encoding") or ""):
            resp.set_header("Content-Encoding", "gzip")
            resp.data = asset.gzipped
        else:
            resp.data = asset.body


class ActivityResource:
    """GET /ui/api/activity (recent chats) and /ui/api/activity/{event_id} (one, whole). A key
    limited to some workspaces sees only the chats of those."""

    def __init__(self, log: ActivityLog) -> None:
        self._log = log

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        limit = req.get_param_as_int("limit", min_value=1, max_value=500, default=50)
        _json(resp, {"object": "list", "data": await self._log.recent(limit, caller_of(req).workspaces or None)})

    async def on_get_one(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, event_id: str) -> None:
        found = await self._log.detail(check_text(event_id, "event_id"))
        allowed = caller_of(req).workspaces
        if found is None or (allowed and found.get("workspace") not in allowed):
            raise NotFound(f"No chat '{event_id}' in the activity log", param="event_id")
        _json(resp, found)


def _json(resp: falcon.asgi.Response, body: Any) -> None:
    _headers(resp)
    resp.set_header("Cache-Control", "no-store")
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(body)


def add_routes(app: falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response], activity: ActivityLog | None) -> None:
    static = StaticResource(load_assets())
    app.add_route("/ui", static)
    app.add_route("/ui/{name}", static, suffix="asset")
    log: Any = ActivityResource(activity) if activity else Unavailable(
        "activity needs PostgreSQL with the event tables: set APPLIANCE_DATABASE_URL (and run the persister)")
    app.add_route("/ui/api/activity", log)
    app.add_route("/ui/api/activity/{event_id}", log, suffix="one")
