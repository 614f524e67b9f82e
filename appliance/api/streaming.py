"""What every chat dialect's resource shares: request options from headers, the plan's
response headers, and streaming a response after its head has gone out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import falcon.asgi

from appliance.api.asgi_scope import RECEIVE_KEY
from appliance.domain.chat import ChatPlan, ChatRequest
from appliance.domain.errors import ApplianceError, InvalidRequest


async def relay(req: falcon.asgi.Request, finish: Callable[[falcon.asgi.Request, int], None],
                frames: AsyncIterator[bytes], error_frame: Callable[[ApplianceError], bytes]) -> AsyncIterator[bytes]:
    """Send `frames`; a failure after the head becomes `error_frame(exc)` (the status is gone
    already), the client hanging up cancels the upstream, and `finish` logs the request."""
    status = 200
    watcher = watch_disconnect(req)
    try:
        async for frame in frames:
            yield frame
    except ApplianceError as exc:
        status = exc.status
        yield error_frame(exc)
    except BaseException:
        status = 499
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
        finish(req, status)


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


def stream_head(resp: falcon.asgi.Response, content_type: str) -> None:
    resp.content_type = content_type
    resp.set_header("Cache-Control", "no-cache")
    resp.set_header("X-Accel-Buffering", "no")


def rag_top_k(req: falcon.asgi.Request) -> int | None:
    raw = req.get_header("x-rag-top-k")
    if raw is None:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidRequest("x-rag-top-k must be an integer from 1 to 100", param="x-rag-top-k")
    return int(raw)


def plan_headers(resp: falcon.asgi.Response, plan: ChatPlan) -> None:
    resp.set_header("x-appliance-backend", plan.target.backend)
    resp.set_header("x-appliance-route", plan.route)
    if plan.route == "rag":
        resp.set_header("x-appliance-sources", ",".join(plan.sources))
    if plan.warnings:
        resp.set_header("x-appliance-warning", "; ".join(plan.warnings))


def overhead(resp: falcon.asgi.Response, creq: ChatRequest, upstream_ms: float) -> None:
    total_ms = (time.perf_counter() - creq.received_at) * 1000
    resp.set_header("x-appliance-overhead-ms", f"{max(total_ms - upstream_ms, 0.0):.3f}")
