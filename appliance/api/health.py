"""GET /healthz (alive, no I/O) and GET /readyz (which dependencies answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import falcon
import falcon.asgi
import orjson

from appliance.domain.errors import UpstreamError
from appliance.domain.ports import ChatBackend
from appliance.feature import ReadinessCheck


class HealthResource:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.data = b'{"status":"ok"}'
        resp.content_type = falcon.MEDIA_JSON


class ReadyResource:
    """200 when at least one backend answers (or none is configured but the process is up
    for other features); 503 when backends are configured and none answers. Other
    dependencies are reported, and degrade only the features that need them."""

    def __init__(self, backends: Mapping[str, ChatBackend], checks: Mapping[str, ReadinessCheck],
                 timeout_s: float = 3.0, breakers: Callable[[], Mapping[str, str]] = dict) -> None:
        self._backends = backends
        self._checks = checks
        self._timeout = timeout_s
        self._breakers = breakers

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        names = list(self._backends)
        backend_results = await asyncio.gather(*(self._probe(self._backends[n]) for n in names))
        backends = dict(zip(names, backend_results, strict=True))
        for name, state in self._breakers().items():
            if name in backends:
                backends[name]["breaker"] = state
        deps_names = list(self._checks)
        dep_results = await asyncio.gather(*(self._check(self._checks[n]) for n in deps_names))
        dependencies = dict(zip(deps_names, dep_results, strict=True))
        serving = any(b["ok"] for b in backends.values()) or not backends
        resp.status = 200 if serving else 503
        resp.content_type = falcon.MEDIA_JSON
        resp.data = orjson.dumps({"status": "ready" if serving else "unavailable", "backends": backends,
                                  "dependencies": dependencies})

    async def _probe(self, backend: ChatBackend) -> dict[str, Any]:
        try:
            models = await asyncio.wait_for(backend.list_models(), self._timeout)
        except (TimeoutError, UpstreamError) as exc:
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        return {"ok": True, "models": len(models)}

    async def _check(self, check: ReadinessCheck) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(check(), self._timeout)
        except Exception as exc:
            return {"ok": False, "error": str(exc) or type(exc).__name__}
