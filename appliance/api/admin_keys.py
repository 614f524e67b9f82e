"""/admin/keys: the key administration of `appliance keys`, over HTTP, for admin keys only
(AccessGuard refuses anything else under /admin before these run).

    GET    /admin/keys                 {"data": [key, ...]}            never a secret
    POST   /admin/keys                 {"name", "models", "workspaces", "rpm", "tpm", "budget_usd",
                                        "period", "expires", "admin"} -> 201 {..., "key": secret}
    DELETE /admin/keys/{name}          revoke
    POST   /admin/keys/{name}/rotate   -> {..., "key": new secret}
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import falcon
import falcon.asgi
import orjson

from appliance.api.access import require_admin
from appliance.api.body import read_json
from appliance.api.unavailable import Unavailable
from appliance.domain.access import KeyAdmin
from appliance.domain.errors import InvalidRequest
from appliance.domain.keys import KeySpec


def _json(resp: falcon.asgi.Response, body: Any, status: int = 200) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(body)


def parse_expiry(value: Any) -> float | None:
    """`expires`: an ISO date (`2027-01-01`, midnight UTC), an ISO time, or unix seconds."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
    raise InvalidRequest("'expires' must be an ISO date or time, or unix seconds", param="expires")


def _names(body: dict[str, Any], field: str) -> tuple[str, ...]:
    value = body.get(field) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise InvalidRequest(f"'{field}' must be a list of names", param=field)
    return tuple(value)


def spec_of(body: Any) -> KeySpec:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str):
        raise InvalidRequest("'name' is required", param="name")
    return KeySpec(name, _names(body, "models"), _names(body, "workspaces"), body.get("rpm"), body.get("tpm"),
                   body.get("budget_usd"), body.get("period") or "month", parse_expiry(body.get("expires")),
                   body.get("admin") is True)


class KeysResource:
    def __init__(self, admin: KeyAdmin) -> None:
        self._admin = admin

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        require_admin(req)
        _json(resp, {"object": "list", "data": [k.public() for k in await self._admin.list_keys()]})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        actor = require_admin(req).name or "admin"
        record, secret = await self._admin.create(spec_of(await read_json(req)), actor=actor)
        _json(resp, {**record.public(), "key": secret}, 201)

    async def on_delete_one(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        actor = require_admin(req).name or "admin"
        _json(resp, {**(await self._admin.revoke(name, actor=actor)).public(), "revoked": True})

    async def on_post_rotate(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        actor = require_admin(req).name or "admin"
        record, secret = await self._admin.rotate(name, actor=actor)
        _json(resp, {**record.public(), "key": secret})


def add_routes(app: falcon.asgi.App[Any, Any], admin: KeyAdmin | None) -> None:
    keys: Any = KeysResource(admin) if admin is not None else Unavailable(
        "keys are kept in PostgreSQL: set APPLIANCE_DATABASE_URL (or run `appliance up`)")
    app.add_route("/admin/keys", keys)
    app.add_route("/admin/keys/{name}", keys, suffix="one")
    app.add_route("/admin/keys/{name}/rotate", keys, suffix="rotate")
