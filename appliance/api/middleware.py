"""Per-request plumbing: correlation id, API keys, body limit, access log and HTTP metrics."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import time
from collections.abc import Collection
from typing import Any, Final

import falcon.asgi

from appliance import logs
from appliance.api.body import BodyLimits
from appliance.api.browser_guard import BrowserGuard
from appliance.api.metrics import HTTP_DURATION, HTTP_REQUESTS, labelled, method_label
from appliance.domain.errors import PayloadTooLarge, Unauthorized

_CID_OK: Final = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})


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

    def __init__(self, *, body_limits: BodyLimits, key_hashes: Collection[str] = (), access_log: bool = True,
                 allowed_hosts: Collection[str] = ()) -> None:
        self._body_limits = body_limits
        self._max_body = body_limits.max_bytes
        self._keys = frozenset(key_hashes)
        self._guard = BrowserGuard(check_host=not self._keys, allowed_hosts=allowed_hosts)
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
        length = req.content_length
        if length is not None and length > self._max_body:
            raise PayloadTooLarge(f"Request body of {length} bytes exceeds the limit of {self._max_body} bytes")
        self._guard.check(req)
        if self._keys and req.path not in _OPEN_PATHS:
            self._authorize(req)

    def _authorize(self, req: falcon.asgi.Request) -> None:
        token = req.get_header("x-api-key") or ""
        auth = req.get_header("Authorization")
        if auth and auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        if not token:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        if hashlib.sha256(token.encode()).hexdigest() not in self._keys:
            raise Unauthorized("Invalid API key")

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
        if self._access_log:
            logs.access_line({
                "msg": "request", "method": req.method, "path": req.path, "status": code,
                "duration_ms": round(elapsed * 1000, 3), "model": getattr(ctx, "model", None),
                "backend": getattr(ctx, "backend", None), "correlation_id": getattr(ctx, "cid", None),
            })
