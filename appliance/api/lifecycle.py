"""ASGI lifespan: start services, tell systemd READY, ping the watchdog, drain on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import falcon.asgi

from appliance import systemd
from appliance.api.middleware import RequestContext
from appliance.services import Services

log = logging.getLogger(__name__)


class Lifecycle:
    """Falcon middleware for the lifespan events of one worker."""

    def __init__(self, services: Services, context: RequestContext) -> None:
        self._services = services
        self._context = context
        self._watchdog: asyncio.Task[None] | None = None

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        await self._services.start()
        interval = systemd.watchdog_interval()
        if interval:
            self._watchdog = asyncio.create_task(self._ping(interval))
        settings = self._services.settings
        systemd.notify_ready(f"serving on {settings.host}:{settings.port}")
        log.info("gateway ready", extra={"host": settings.host, "port": settings.port,
                                         "backends": len(self._services.backends)})

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        systemd.notify_stopping()
        deadline = time.monotonic() + self._services.settings.drain_timeout_s
        while self._context.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._context.in_flight:
            log.warning("drain timed out", extra={"in_flight": self._context.in_flight})
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self._services.aclose()
        log.info("gateway stopped")

    async def _ping(self, interval: float) -> None:
        while True:
            systemd.notify_watchdog()
            await asyncio.sleep(interval)

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        return None
