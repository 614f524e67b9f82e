"""POST /v1/chat/completions: parse, one domain call, render (JSON or an SSE relay)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import falcon
import falcon.asgi
import orjson

from appliance.api.errors import read_json
from appliance.api.streaming import overhead, plan_headers, rag_top_k, relay, stream_head
from appliance.domain.chat import ChatRequest, ChatService
from appliance.domain.errors import ApplianceError
from appliance.openai.chat import error_body, validate_chat
from appliance.openai.sse import DONE_EVENT


class ChatCompletions:
    def __init__(self, chat: ChatService, *, max_body_bytes: int, finish: Callable[[falcon.asgi.Request, int], None]) -> None:
        self._chat = chat
        self._max_body = max_body_bytes
        self._finish = finish

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_json(req, self._max_body)
        model, stream = validate_chat(body)
        req.context.model = model
        creq = ChatRequest(body, model, stream, req.context.cid, workspace=req.get_header("x-workspace"),
                           rag_top_k=rag_top_k(req), received_at=req.context.started)
        plan = await self._chat.plan(creq)
        req.context.backend = plan.target.backend
        plan_headers(resp, plan)
        if not stream:
            reply = await self._chat.complete(creq, plan)
            resp.data = orjson.dumps(reply.body)
            resp.content_type = falcon.MEDIA_JSON
            overhead(resp, creq, reply.upstream_ms)
            return
        events, upstream_ms = await self._chat.open_stream(creq, plan)
        stream_head(resp, "text/event-stream")
        overhead(resp, creq, upstream_ms)
        req.context.defer_log = True
        resp.stream = relay(req, self._finish, self._sse(events), _error_event)

    @staticmethod
    async def _sse(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for data in events:
            yield b"data: " + data + b"\n\n"
        yield DONE_EVENT


def _error_event(exc: ApplianceError) -> bytes:
    return b"data: " + orjson.dumps(error_body(exc.message, exc.type, exc.param, exc.code)) + b"\n\n"
