"""POST /v1/chat/completions: parse, one domain call, render (JSON or an SSE stream)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import falcon
import falcon.asgi
import orjson

from appliance.api.body import read_json
from appliance.api.streaming import chat_request, overhead, plan_headers, stream_body, stream_head
from appliance.domain.chat import ChatService
from appliance.domain.chat_request import ChatPlan, passages_json, prompt_json
from appliance.openai.chat import validate_chat
from appliance.openai.sse import DONE_EVENT, encode


class ChatCompletions:
    def __init__(self, chat: ChatService, *, finish: Callable[[falcon.asgi.Request, int], None]) -> None:
        self._chat = chat
        self._finish = finish

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_json(req)
        model, stream = validate_chat(body)
        creq = chat_request(req, body, model, stream)
        plan = await self._chat.plan(creq)
        if not stream:
            reply = await self._chat.complete(creq, plan)
            plan_headers(req, resp, plan)
            resp.data = orjson.dumps(reply.body)
            resp.content_type = falcon.MEDIA_JSON
            overhead(resp, creq, reply.upstream_ms)
            return
        events = await self._chat.open_stream(creq, plan)
        plan_headers(req, resp, plan)
        stream_head(resp, "text/event-stream")
        overhead(resp, creq, events.upstream_ms)
        req.context.defer_log = True
        lead = _passages_event(plan) if _wants_passages(req) and plan.route == "rag" else b""

        async def sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            if lead:
                yield lead
            async for data in chunks:
                yield encode(data)
            yield DONE_EVENT

        resp.stream = stream_body(req, events, sse, self._finish)


def _wants_passages(req: falcon.asgi.Request) -> bool:
    return (req.get_header("x-appliance-passages") or "").strip().lower() in ("1", "true", "yes")


def _passages_event(plan: ChatPlan) -> bytes:
    """Asked for with `x-appliance-passages: true` (the web UI does): one named SSE event
    before the first chunk with the numbered passages and the prompt; a client that did not
    ask never sees it."""
    body = orjson.dumps({"passages": passages_json(plan.passages), "prompt": prompt_json(plan.prompt)})
    return b"event: appliance.passages\ndata: " + body + b"\n\n"
