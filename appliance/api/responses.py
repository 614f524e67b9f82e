"""/v1/responses: the OpenAI Responses API over the same chat path as /v1/chat/completions.

The body is translated once to an OpenAI chat body (with the stored conversation in front
when it continues one), planned and answered by `ChatService` (model routing, routers,
fallbacks, retrieval with `x-workspace`, recording), and the answer translated back. A
response with `store` (the default) is written before the create answers: a JSON answer
after it is stored, a stream after its last output item and before `response.completed`.
A stored response is the calling key's (`owner`): GET, DELETE, `input_items` and
`previous_response_id` find only the caller's own (docs/responses.md).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import falcon
import falcon.asgi
import orjson

from appliance.api.access import caller_of
from appliance.api.body import read_json
from appliance.api.errors import failure_of
from appliance.api.streaming import chat_request, overhead, plan_headers, stream_body, stream_head
from appliance.domain.chat import ChatService
from appliance.domain.chat_request import ChatPlan, ChatRequest
from appliance.domain.ports import StoredResponse
from appliance.domain.responses import ResponseArchive
from appliance.openai.responses import ResponsesCall, chat_body, new_id, parse_responses
from appliance.openai.responses_output import response_from_chat
from appliance.openai.responses_stream import ResponsesStream

Keep = Callable[[dict[str, Any]], Awaitable[str | None]]


class Responses:
    def __init__(self, chat: ChatService, archive: ResponseArchive, *,
                 finish: Callable[[falcon.asgi.Request, int], None]) -> None:
        self._chat = chat
        self._archive = archive
        self._finish = finish

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        call = parse_responses(await read_json(req))
        history = await self._archive.history(call.previous_response_id, owner=owner_of(req))
        creq = chat_request(req, chat_body(call, history), call.model, call.stream)
        plan = await self._chat.plan(creq)
        plan.warnings.extend(call.warnings)
        response_id, created_at = new_id("resp"), int(time.time())
        keep = self._keeper(req, call, response_id)
        if call.stream:
            await self._stream(req, resp, call, creq, plan, ResponsesStream(call, response_id, created_at,
                                                                             call.previous_response_id), keep)
            return
        reply = await self._chat.complete(creq, plan)
        response = response_from_chat(call, reply.body, response_id, created_at, call.previous_response_id)
        if warning := await keep(response):
            plan.warnings.append(warning)
        plan_headers(req, resp, plan)
        resp.data = orjson.dumps(response)
        resp.content_type = falcon.MEDIA_JSON
        overhead(resp, creq, reply.upstream_ms)

    async def _stream(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, call: ResponsesCall,
                      creq: ChatRequest, plan: ChatPlan, translator: ResponsesStream, keep: Keep) -> None:
        chunks = await self._chat.open_chunks(creq, plan)
        plan_headers(req, resp, plan)
        stream_head(resp, "text/event-stream")
        overhead(resp, creq, chunks.upstream_ms)
        req.context.defer_log = True
        resp.stream = stream_body(req, chunks, lambda c: _events(c, translator, keep), self._finish)

    def _keeper(self, req: falcon.asgi.Request, call: ResponsesCall, response_id: str) -> Keep:
        """Stores the finished response (when asked to), as the caller's; a warning when it could not."""
        owner = owner_of(req)

        async def keep(response: dict[str, Any]) -> str | None:
            if not call.store:
                return None
            return await self._archive.keep(StoredResponse(response_id, req.context.cid, call.model,
                                                           str(response["status"]), call.previous_response_id,
                                                           call.items, response, owner))
        return keep

    async def on_get_one(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, response_id: str) -> None:
        resp.data = orjson.dumps((await self._archive.get(response_id, owner=owner_of(req))).response)
        resp.content_type = falcon.MEDIA_JSON

    async def on_delete_one(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, response_id: str) -> None:
        await self._archive.delete(response_id, owner=owner_of(req))
        resp.media = {"id": response_id, "object": "response", "deleted": True}

    async def on_get_items(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, response_id: str) -> None:
        limit = req.get_param_as_int("limit", min_value=1, max_value=100, default=20)
        order = req.get_param("order", default="desc")
        if order not in ("asc", "desc"):
            raise falcon.HTTPInvalidParam("must be 'asc' or 'desc'", "order")
        page = await self._archive.input_items(response_id, owner=owner_of(req), after=req.get_param("after"),
                                               limit=limit, order=order)
        resp.data = orjson.dumps({"object": "list", "data": page.items, "has_more": page.has_more,
                                  "first_id": page.items[0]["id"] if page.items else None,
                                  "last_id": page.items[-1]["id"] if page.items else None})
        resp.content_type = falcon.MEDIA_JSON


def owner_of(req: falcon.asgi.Request) -> str:
    """Whose stored responses this request reaches: its key's name ("" for the anonymous
    caller of a gateway without keys). Admin keys included: their own only."""
    return caller_of(req).name or ""


async def _events(chunks: AsyncIterator[dict[str, Any]], translator: ResponsesStream, keep: Keep) -> AsyncIterator[bytes]:
    """The stream's events. A failure after the head ends it with `response.failed` (the failed
    response stored too), then propagates for the stream wrapper to record and log."""
    yield b"".join(translator.start())
    try:
        async for chunk in chunks:  # the usage chunk included: response.completed reports the counts
            if frames := translator.feed(chunk):
                yield b"".join(frames)
        yield b"".join(translator.close())
    except Exception as exc:
        failure = failure_of(exc)
        response, frame = translator.failure(failure.code or "server_error", failure.message)
        await keep(response)
        yield frame
        raise
    response = translator.response()
    await keep(response)  # stored before response.completed goes out
    yield translator.completed(response)
