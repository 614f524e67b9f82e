"""POST /v1/chat/completions: parse, one domain call, render (JSON or an SSE relay)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import falcon
import falcon.asgi
import orjson

from appliance.api.asgi_scope import RECEIVE_KEY
from appliance.api.errors import read_json
from appliance.domain.chat import ChatPlan, ChatRequest, ChatService
from appliance.domain.errors import ApplianceError, InvalidRequest
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
                           rag_top_k=_top_k(req), received_at=req.context.started)
        plan = await self._chat.plan(creq)
        req.context.backend = plan.target.backend
        _plan_headers(resp, plan)
        if not stream:
            reply = await self._chat.complete(creq, plan)
            resp.data = orjson.dumps(reply.body)
            resp.content_type = falcon.MEDIA_JSON
            _overhead(resp, creq, reply.upstream_ms)
            return
        events, upstream_ms = await self._chat.open_stream(creq, plan)
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        _overhead(resp, creq, upstream_ms)
        req.context.defer_log = True
        resp.stream = self._relay(req, events)

    async def _relay(self, req: falcon.asgi.Request, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        status = 200
        watcher = watch_disconnect(req)
        try:
            async for data in events:
                yield b"data: " + data + b"\n\n"
            yield DONE_EVENT
        except ApplianceError as exc:
            # Headers are gone already: the failure travels as an SSE error event.
            status = exc.status
            yield b"data: " + orjson.dumps(error_body(exc.message, exc.type, exc.param, exc.code)) + b"\n\n"
        except BaseException:
            status = 499
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            self._finish(req, status)


def watch_disconnect(req: falcon.asgi.Request) -> asyncio.Task[None] | None:
    """Cancel this request's task when the client hangs up.

    Granian (ASGI 2.3) swallows sends to a closed connection, so a stream would otherwise
    keep reading the upstream to the end; the only signal is `http.disconnect` on receive().
    """
    receive = req.scope.get(RECEIVE_KEY)
    task = asyncio.current_task()
    if receive is None or task is None:
        return None

    async def watch() -> None:
        while True:
            event = await receive()
            if event.get("type") == "http.disconnect":
                task.cancel()
                return

    return asyncio.create_task(watch())


def _top_k(req: falcon.asgi.Request) -> int | None:
    raw = req.get_header("x-rag-top-k")
    if raw is None:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidRequest("x-rag-top-k must be an integer from 1 to 100", param="x-rag-top-k")
    return int(raw)


def _plan_headers(resp: falcon.asgi.Response, plan: ChatPlan) -> None:
    resp.set_header("x-appliance-backend", plan.target.backend)
    resp.set_header("x-appliance-route", plan.route)
    if plan.route == "rag":
        resp.set_header("x-appliance-sources", ",".join(plan.sources))
    if plan.warnings:
        resp.set_header("x-appliance-warning", "; ".join(plan.warnings))


def _overhead(resp: falcon.asgi.Response, creq: ChatRequest, upstream_ms: float) -> None:
    total_ms = (time.perf_counter() - creq.received_at) * 1000
    resp.set_header("x-appliance-overhead-ms", f"{max(total_ms - upstream_ms, 0.0):.3f}")
