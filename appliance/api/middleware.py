"""Per-request plumbing: correlation id, body limit, access log and HTTP metrics (API keys:
api/access.py, the middleware after this one)."""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Collection
from typing import Any, Final

import falcon.asgi

from appliance import logs
from appliance.api.body import BodyLimits
from appliance.api.browser_guard import BrowserGuard
from appliance.api.metrics import HTTP_DURATION, HTTP_REQUESTS, labelled, method_label
from appliance.domain.errors import PayloadTooLarge
from appliance.domain.tracing import NO_TRACER, Tracer

_CID_OK: Final = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def is_ui_shell(path: str) -> bool:
    """The web UI's static files (no data in them; its API calls carry the key), not /ui/api/."""
    return path == "/ui" or (path.startswith("/ui/") and not path.startswith("/ui/api"))


class _Ids:
    """Correlation ids: 64 random bits per process, then a counter (no syscall per request)."""

    def __init__(self) -> None:
        self._prefix = ""
        self._pid = -1
        self._counter = itertools.count()

    def next(self) -> str:
        if self._pid != os.getpid():  # a forked worker must not repeat its parent's ids
            self._pid = os.getpid()
            self._prefix = os.urandom(8).hex()
            self._counter = itertools.count()
        return f"{self._prefix}{next(self._counter):016x}"


new_correlation_id = _Ids().next


class RequestContext:
    """Runs around every request. Streaming responders set `req.context.defer_log = True` and
    call `finish(req, status)` themselves when the stream ends, so the line has the full time."""

    def __init__(self, *, body_limits: BodyLimits, keys_required: Callable[[], bool] = lambda: False,
                 access_log: bool = True, allowed_hosts: Collection[str] = (), tracer: Tracer = NO_TRACER) -> None:
        self._tracer = tracer
        self._tracing = tracer.enabled
        self._body_limits = body_limits
        self._max_body = body_limits.max_bytes
        self._keys_required = keys_required   # keys themselves: api/access.py (AccessGuard)
        self._guard = BrowserGuard(check_host=True, allowed_hosts=allowed_hosts)
        self._access_log = access_log
        self.in_flight = 0

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        ctx = req.context
        ctx.started = time.perf_counter()
        self.in_flight += 1
        cid = req.get_header("X-Correlation-ID") or req.get_header("X-Request-ID")
        if not cid or not _CID_OK.match(cid):
            cid = new_correlation_id()
        ctx.cid = cid
        ctx.model = None
        ctx.backend = None
        ctx.defer_log = False
        ctx.body_limits = self._body_limits
        logs.correlation_id.set(cid)
        resp.set_header("X-Correlation-ID", cid)
        if self._tracing:
            self._start_span(req, cid)
        length = req.content_length
        if length is not None and length > self._max_body:
            raise PayloadTooLarge(f"Request body of {length} bytes exceeds the limit of {self._max_body} bytes")
        self._guard.check(req, check_host=not self._keys_required())

    def _start_span(self, req: falcon.asgi.Request, cid: str) -> None:
        """The request's server span (the domain's spans are its children), named for its
        route once that is known; its trace id goes on every log line of the request, beside
        the correlation id it carries."""
        span = self._tracer.start_request(f"{req.method} {req.path}", {
            "http.request.method": req.method, "url.path": req.path, "appliance.correlation_id": cid,
            "user_agent.original": req.get_header("User-Agent")}, traceparent=req.get_header("traceparent"))
        req.context.span = span
        logs.trace_id.set(span.trace_id)

    async def process_response(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any,
                               req_succeeded: bool) -> None:
        if not getattr(req.context, "defer_log", False):
            self.finish(req, resp.status)

    def finish(self, req: falcon.asgi.Request, status: Any) -> None:
        ctx = req.context
        if getattr(ctx, "finished", False):
            return
        ctx.finished = True
        self.in_flight -= 1
        started = getattr(ctx, "started", None)
        elapsed = time.perf_counter() - started if started is not None else 0.0
        code = falcon.http_status_to_code(status)
        route = req.uri_template or "unmatched"
        labelled(HTTP_REQUESTS, method_label(req.method), route, code).inc()
        labelled(HTTP_DURATION, route).observe(elapsed)
        span = getattr(ctx, "span", None) if self._tracing else None
        if span is not None:
            span.rename(f"{req.method} {route}")   # the route, not the path: names stay few
            span.set("http.route", route)
            span.set("http.response.status_code", code)
            span.set("appliance.key", getattr(getattr(ctx, "caller", None), "name", None))
            if code >= 500:
                span.fail(f"HTTP {code}", str(code))
            span.end()
        if self._access_log:
            logs.access_line({
                "msg": "request", "method": req.method, "path": req.path, "status": code,
                "duration_ms": round(elapsed * 1000, 3), "model": getattr(ctx, "model", None),
                "backend": getattr(ctx, "backend", None), "correlation_id": getattr(ctx, "cid", None),
                "key": getattr(getattr(ctx, "caller", None), "name", None),
                **({"trace_id": span.trace_id} if span is not None else {}),
            })
