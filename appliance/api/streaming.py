"""What every chat dialect's resource shares: request options from headers, the plan's
response headers, and streaming a response after its head has gone out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import falcon.asgi

from appliance.api.access import admit_chat, caller_of
from appliance.api.asgi_scope import RECEIVE_KEY
from appliance.api.errors import dialect_for, failure_of, log_failure
from appliance.domain.chat_request import ChatPlan, ChatRequest
from appliance.domain.chat_stream import ChatStream
from appliance.domain.errors import InvalidRequest

T = TypeVar("T")


async def stream_body(req: falcon.asgi.Request, stream: ChatStream[T],
                      encode: Callable[[AsyncIterator[T]], AsyncIterator[bytes]],
                      finish: Callable[[falcon.asgi.Request, int], None]) -> AsyncIterator[bytes]:
    """The one wrapper every streaming response goes through: send `encode(stream)`, then
    record how it ended (`stream.end`) and write the access line (`finish`).

    After the head has gone out a failure cannot change the status, so it becomes the
    dialect's error frame (the error table's). Only a client hanging up (or a cancellation)
    counts as 499; any other exception is the gateway's fault: recorded with its status
    (500 for a bug), logged with its traceback and correlation id. A hang-up is a normal
    end: the access line says 499 and nothing is raised into the server.
    """
    status, error = 200, None
    watcher = DisconnectWatcher.start(req)
    try:
        async for frame in encode(aiter(stream)):
            yield frame
    except asyncio.CancelledError:
        status, error = 499, "client disconnected"
        if watcher is None or not watcher.disconnected:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # our own cancellation, on the client's hang-up: the stream just ends
    except GeneratorExit:  # the server stopped iterating: the client is gone
        status, error = 499, "client disconnected"
        raise
    except Exception as exc:
        failure = failure_of(exc)
        status, error = failure.status, failure.message
        log_failure(req, failure, exc)
        yield dialect_for(req.path).frame(failure)
    finally:
        if watcher is not None:
            watcher.stop()
        await stream.end(status, error)
        finish(req, status)


class DisconnectWatcher:
    """Cancels a request's task when the client hangs up.

    Granian (ASGI 2.3) swallows sends to a closed connection, so a stream would otherwise
    keep reading the upstream to the end; the only signal is `http.disconnect` on receive().
    """

    __slots__ = ("_task", "disconnected")

    def __init__(self) -> None:
        self.disconnected = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, req: falcon.asgi.Request) -> DisconnectWatcher | None:
        receive = req.scope.get(RECEIVE_KEY)
        task = asyncio.current_task()
        if receive is None or task is None:
            return None
        watcher = cls()

        async def watch() -> None:
            while True:
                event = await receive()
                if event.get("type") == "http.disconnect":
                    watcher.disconnected = True
                    task.cancel()
                    return

        watcher._task = asyncio.create_task(watch())
        return watcher

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def stream_head(resp: falcon.asgi.Response, content_type: str) -> None:
    resp.content_type = content_type
    resp.set_header("Cache-Control", "no-cache")
    resp.set_header("X-Accel-Buffering", "no")


def chat_request(req: falcon.asgi.Request, body: dict[str, Any], model: str, stream: bool,
                 extensions: Mapping[str, Any] | None = None) -> ChatRequest:
    """The domain's request from a dialect's translated body and the request's headers; the
    caller's key may use the model and has room for its tokens (api/access.py), or this raises."""
    req.context.model = model
    admit_chat(req, model, body)
    return ChatRequest(body, model, stream, req.context.cid, workspace=req.get_header("x-workspace"),
                       rag_top_k=rag_top_k(req), prompt=req.get_header("x-prompt-version"),
                       received_at=req.context.started, extensions=extensions or {}, key=caller_of(req).name)


def rag_top_k(req: falcon.asgi.Request) -> int | None:
    raw = req.get_header("x-rag-top-k")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 100:
        raise InvalidRequest("x-rag-top-k must be an integer from 1 to 100", param="x-rag-top-k")
    return int(raw)


def plan_headers(req: falcon.asgi.Request, resp: falcon.asgi.Response, plan: ChatPlan) -> None:
    """What answered and how, once the backend has: set after the call, before the head goes out."""
    req.context.backend = plan.backend
    resp.set_header("x-appliance-backend", plan.backend)
    if plan.fallback_from is not None:
        resp.set_header("x-appliance-fallback", f"{plan.fallback_from} -> {plan.target.model_id}")
    if plan.routing:
        resp.set_header("x-appliance-selected-model", str(plan.routing.get("selected", "")))
        resp.set_header("x-appliance-route-reason", str(plan.routing.get("reason", "")))
    resp.set_header("x-appliance-route", plan.route)
    if plan.route == "rag":
        resp.set_header("x-appliance-sources", ",".join(plan.sources))
    if plan.prompt is not None:
        resp.set_header("x-appliance-prompt", plan.prompt.ref)
    if plan.warnings:
        resp.set_header("x-appliance-warning", "; ".join(plan.warnings))
    if plan.schema_warning is not None:  # the parser chain's output-format stage gave up (docs/parsers.md)
        resp.set_header("x-appliance-schema-warning", plan.schema_warning.encode("ascii", "replace").decode())


def overhead(resp: falcon.asgi.Response, creq: ChatRequest, upstream_ms: float) -> None:
    total_ms = (time.perf_counter() - creq.received_at) * 1000
    resp.set_header("x-appliance-overhead-ms", f"{max(total_ms - upstream_ms, 0.0):.3f}")
