"""GET /v1/models and /v1/models/{id}: catalog models plus what the backends report, as far
as the caller's key may use them (its model list)."""

from __future__ import annotations

import falcon
import falcon.asgi
import orjson

from appliance.api.access import may_see_model, visible_models
from appliance.domain.errors import ModelNotFound
from appliance.domain.models import ModelDirectory


class ModelsResource:
    def __init__(self, directory: ModelDirectory) -> None:
        self._directory = directory

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.data = orjson.dumps({"object": "list", "data": visible_models(req, await self._directory.listing())})
        resp.content_type = falcon.MEDIA_JSON

    async def on_get_one(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, model_id: str) -> None:
        model = await self._directory.get(model_id) if may_see_model(req, model_id) else None
        if model is None:
            raise ModelNotFound(model_id)
        resp.data = orjson.dumps(model)
        resp.content_type = falcon.MEDIA_JSON
