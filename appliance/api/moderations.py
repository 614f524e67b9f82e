"""POST /v1/moderations: each input judged by the guard model (domain/moderation.py), answered
in OpenAI's moderation shape (openai/moderations.py)."""

from __future__ import annotations

import falcon
import falcon.asgi
import orjson

from appliance.api.body import read_json
from appliance.domain.errors import DependencyUnavailable
from appliance.domain.moderation import Moderation
from appliance.openai.moderations import moderation_result, parse_moderation

NOT_CONFIGURED = ("moderation is not configured: name a guard model in the catalog with "
                  '[moderations] model = "<catalog model id>" (docs/responses.md)')


class Moderations:
    def __init__(self, moderation: Moderation | None, *, max_inputs: int) -> None:
        self._moderation = moderation
        self._max_inputs = max_inputs

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        call = parse_moderation(await read_json(req), max_inputs=self._max_inputs)
        if self._moderation is None:
            raise DependencyUnavailable(NOT_CONFIGURED, code="moderation_not_configured")
        guard = self._moderation
        req.context.model = guard.model
        verdicts = await guard.classify([[{"role": "user", "content": t}] for t in call.texts], use="endpoint")
        if call.images:
            resp.set_header("x-appliance-warning", f"{call.images} image part(s) not judged: the guard reads text only")
        resp.data = orjson.dumps({"id": f"modr-{req.context.cid}", "model": guard.model, "results": [
            moderation_result(v.flagged, v.categories, {"format": guard.format, "codes": list(v.codes)})
            for v in verdicts]})
        resp.content_type = falcon.MEDIA_JSON
