"""A route whose feature is not configured on this gateway: a clear 503 naming what to set."""

from __future__ import annotations

import falcon.asgi

from appliance.domain.errors import DependencyUnavailable


class Unavailable:
    def __init__(self, why: str) -> None:
        self._why = why

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: str) -> None:
        raise DependencyUnavailable(self._why)

    on_post = on_delete = on_get_one = on_post_one = on_delete_one = on_get
    on_post_rotate = on_get
