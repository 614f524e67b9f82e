"""POST /v1/messages/count_tokens (Anthropic): a Messages body's input tokens, counted by the
model's backend where it can (`/tokenize`), else estimated (domain/token_count.py).

The answer is Anthropic's `{"input_tokens": N}`, plus `appliance.estimated` / `.counted_by`;
the header `x-appliance-token-count` says `counted` or `estimated` too.
"""

from __future__ import annotations

import falcon
import falcon.asgi
import orjson

from appliance.anthropic.messages import parse_messages
from appliance.api.access import check_model
from appliance.api.body import read_json
from appliance.domain.token_count import TokenCounter
from appliance.wire.errors import WireError


class CountTokens:
    def __init__(self, counter: TokenCounter) -> None:
        self._counter = counter

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_json(req)
        if not isinstance(body, dict):
            raise WireError("The request body must be a JSON object")
        # The same body as /v1/messages without max_tokens (and stream), which counting does not need.
        call = parse_messages({**body, "max_tokens": 1, "stream": False})
        req.context.model = call.model
        check_model(req, call.model)
        count = await self._counter.count(call.model, call.body)
        resp.set_header("x-appliance-token-count", "estimated" if count.estimated else "counted")
        resp.data = orjson.dumps({"input_tokens": count.tokens,
                                  "appliance": {"estimated": count.estimated, "counted_by": count.counted_by}})
        resp.content_type = falcon.MEDIA_JSON
