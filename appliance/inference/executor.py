"""A bounded thread pool that keeps model calls off the event loop.

`workers` threads run model calls (each onnxruntime call already uses `embed_threads`
cores, so one worker is right on a small machine); at most `queue_max` calls may be
running or waiting. Beyond that a call is refused with `DependencyUnavailable` (HTTP 503),
counted and logged, rather than queued without bound. Plain counters, not asyncio
primitives, so one executor serves any number of event loops (tests, `asyncio.run`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from appliance.domain.errors import DependencyUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


class InferenceBusy(DependencyUnavailable):
    """The model queue is full: retry later (HTTP 503, gRPC RESOURCE_EXHAUSTED)."""


class BoundedExecutor:
    def __init__(self, workers: int = 1, queue_max: int = 256, name: str = "inference") -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._queue_max = queue_max
        self._pending = 0
        self._lock = threading.Lock()
        self.rejected = 0

    @property
    def pending(self) -> int:
        return self._pending

    async def run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._pending >= self._queue_max:
                self.rejected += 1
                log.warning("inference queue full (%d calls); refusing", self._queue_max)
                raise InferenceBusy("inference queue is full, retry later")
            self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        finally:
            with self._lock:
                self._pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
