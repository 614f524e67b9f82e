"""ASGI lifespan: start the worker's features, tell systemd READY, ping the watchdog, drain
on shutdown and close the features."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from appliance import systemd
from appliance.api.middleware import RequestContext

log = logging.getLogger(__name__)


class Lifecycle:
    """Falcon middleware for the lifespan events of one worker."""

    def __init__(self, start: Callable[[], Awaitable[None]], close: Callable[[], Awaitable[None]],
                 context: RequestContext, *, drain_timeout_s: float, announce: Mapping[str, Any]) -> None:
        self._start = start
        self._close = close
        self._context = context
        self._drain_timeout = drain_timeout_s
        self._announce = dict(announce)  # host, port, backends: said once ready
        self._watchdog: asyncio.Task[None] | None = None

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        await self._start()
        interval = systemd.watchdog_interval()
        if interval:
            self._watchdog = asyncio.create_task(self._ping(interval))
        systemd.notify_ready(f"serving on {self._announce.get('host')}:{self._announce.get('port')}")
        log.info("gateway ready", extra=self._announce)

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        systemd.notify_stopping()
        deadline = time.monotonic() + self._drain_timeout
        while self._context.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._context.in_flight:
            log.warning("drain timed out", extra={"in_flight": self._context.in_flight})
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self._close()
        log.info("gateway stopped")

    async def _ping(self, interval: float) -> None:
        while True:
            systemd.notify_watchdog()
            await asyncio.sleep(interval)

    async def process_request(self, req: Any, resp: Any) -> None:
        return None
