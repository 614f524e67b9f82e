"""POST /v1/messages: the Anthropic Messages API over the same chat path as /v1/chat/completions.

The body is translated once to an OpenAI chat body, planned and answered by `ChatService`
(model routing, retrieval with `x-workspace`, recording), and the answer translated back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import falcon
import falcon.asgi
import orjson

from appliance.anthropic.messages import message_response, parse_messages
from appliance.anthropic.stream import StreamTranslator
from appliance.api.body import read_json
from appliance.api.streaming import chat_request, overhead, plan_headers, stream_body, stream_head
from appliance.domain.chat import ChatService


class Messages:
    def __init__(self, chat: ChatService, *, finish: Callable[[falcon.asgi.Request, int], None]) -> None:
        self._chat = chat
        self._finish = finish

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        call = parse_messages(await read_json(req))
        creq = chat_request(req, call.body, call.model, call.stream, call.extensions)
        message_id = f"msg_{req.context.cid}"
        plan = await self._chat.plan(creq)
        if not call.stream:
            reply = await self._chat.complete(creq, plan)
            plan_headers(req, resp, plan)
            resp.data = orjson.dumps(message_response(reply.body, model=call.model, message_id=message_id,
                                                      stop_sequences=call.stop_sequences))
            resp.content_type = falcon.MEDIA_JSON
            overhead(resp, creq, reply.upstream_ms)
            return
        chunks = await self._chat.open_chunks(creq, plan)
        plan_headers(req, resp, plan)
        stream_head(resp, "text/event-stream")
        overhead(resp, creq, chunks.upstream_ms)
        req.context.defer_log = True
        translator = StreamTranslator(call.model, message_id, call.stop_sequences)
        resp.stream = stream_body(req, chunks, lambda c: _events(c, translator), self._finish)


async def _events(chunks: AsyncIterator[dict[str, Any]], translator: StreamTranslator) -> AsyncIterator[bytes]:
    async for chunk in chunks:  # usage chunk included: message_delta reports the counts
        if out := translator.feed(chunk):
            yield b"".join(out)
    yield b"".join(translator.finish())
