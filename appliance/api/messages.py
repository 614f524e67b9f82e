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
from appliance.anthropic.stream import StreamTranslator, error_event
from appliance.api.errors import anthropic_type, read_json
from appliance.api.streaming import overhead, plan_headers, rag_top_k, relay, stream_head
from appliance.domain.chat import ChatRequest, ChatService
from appliance.domain.errors import ApplianceError


class Messages:
    def __init__(self, chat: ChatService, *, max_body_bytes: int, finish: Callable[[falcon.asgi.Request, int], None]) -> None:
        self._chat = chat
        self._max_body = max_body_bytes
        self._finish = finish

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        call = parse_messages(await read_json(req, self._max_body))
        model, stream = call.model, call.stream
        req.context.model = model
        body = {**call.body, **call.extensions}  # top_k: vLLM, llama.cpp and SGLang take it
        creq = ChatRequest(body, model, stream, req.context.cid, workspace=req.get_header("x-workspace"),
                           rag_top_k=rag_top_k(req), received_at=req.context.started)
        message_id = f"msg_{req.context.cid}"
        plan = await self._chat.plan(creq)
        req.context.backend = plan.target.backend
        plan_headers(resp, plan)
        if not stream:
            reply = await self._chat.complete(creq, plan)
            resp.data = orjson.dumps(message_response(reply.body, model=model, message_id=message_id,
                                                      stop_sequences=call.stop_sequences))
            resp.content_type = falcon.MEDIA_JSON
            overhead(resp, creq, reply.upstream_ms)
            return
        chunks, upstream_ms = await self._chat.open_chunks(creq, plan)
        stream_head(resp, "text/event-stream")
        overhead(resp, creq, upstream_ms)
        req.context.defer_log = True
        resp.stream = relay(req, self._finish, self._events(chunks, StreamTranslator(model, message_id, call.stop_sequences)),
                            _error_event)

    @staticmethod
    async def _events(chunks: AsyncIterator[dict[str, Any]], translator: StreamTranslator) -> AsyncIterator[bytes]:
        async for chunk in chunks:  # usage chunk included: message_delta reports the counts
            if out := translator.feed(chunk):
                yield b"".join(out)
        yield b"".join(translator.finish())


def _error_event(exc: ApplianceError) -> bytes:
    return error_event(anthropic_type(exc.status), exc.message)

