"""Fire-and-forget publication to JetStream that never loses an event while it has disk.

`emit` puts the event in a bounded queue and returns; a background task publishes with
JetStream acks. While NATS is down or not acknowledging, events go to the disk spool and are
replayed in order once it answers (spooled events first, so order holds); a restart replays
what the last run left. Only a full spool drops an event, counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from nats.aio.client import Client as NATS

from appliance.domain.ports import Event
from appliance.events import metrics
from appliance.events.spool import Spool
from appliance.events.streams import connect, ensure_streams

log = logging.getLogger(__name__)

Item = tuple[str, str, bytes]  # subject, msg id, data
REPLAY_BATCH = 256


class EventPublisher:
    """The gateway's `EventSink`."""

    def __init__(self, url: str | None, spool: Spool, *, queue_max: int, publish_timeout_s: float,
                 duplicate_window_s: float, retry_s: float = 1.0) -> None:
        self._url = url
        self.spool = spool
        self._queue: asyncio.Queue[Item] = asyncio.Queue(queue_max)
        self._timeout = publish_timeout_s
        self._window = duplicate_window_s
        self._retry = retry_s
        self._nc: NATS | None = None
        self._js: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        metrics.SPOOL_BYTES.set(spool.size)

    @property
    def connected(self) -> bool:
        return self._js is not None and self._nc is not None and self._nc.is_connected

    def emit(self, event: Event) -> None:
        item = (event.subject, event.msg_id, orjson.dumps(event.payload, default=str))
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._spool(item)

    def _spool(self, item: Item) -> None:
        if self.spool.append(*item):
            metrics.SPOOLED.inc()
        else:
            metrics.DROPPED.inc()
            log.error("event dropped: spool full", extra={"subject": item[0], "msg_id": item[1]})
        metrics.SPOOL_BYTES.set(self.spool.size)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-publisher")

    async def close(self, drain_s: float = 5.0) -> None:
        """Publish what is queued if NATS answers within `drain_s`; spool the rest."""
        self._stopping = True
        if self._task is not None:
            with contextlib.suppress(Exception):  # includes the drain timing out
                await asyncio.wait_for(self._drain(), drain_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            self._spool(self._queue.get_nowait())
        self.spool.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def _drain(self) -> None:
        while not self._queue.empty() and self.connected:
            await asyncio.sleep(0.01)

    async def _run(self) -> None:
        while True:
            try:
                if not self.connected:
                    await self._connect_or_spool()
                elif self.spool.pending():
                    await self._replay()
                else:
                    await self._publish_next()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event publisher error")
                await asyncio.sleep(self._retry)

    async def _connect_or_spool(self) -> None:
        self._spool_queue()
        if not self._url:
            await asyncio.sleep(self._retry)
            return
        try:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(self._url, name="appliance-gateway", timeout_s=self._timeout)
            elif not self._nc.is_connected:
                await asyncio.sleep(self._retry)  # nats-py is reconnecting on its own
                return
            js = self._nc.jetstream(timeout=self._timeout)
            await ensure_streams(js, self._window)
            self._js = js
            metrics.CONNECTED.set(1)
            log.info("event publisher connected", extra={"url": self._url, "spooled_bytes": self.spool.size})
        except Exception as exc:
            self._js = None
            metrics.CONNECTED.set(0)
            log.debug("NATS unavailable; spooling", extra={"error": repr(exc)})
            await asyncio.sleep(self._retry)

    def _spool_queue(self) -> None:
        while not self._queue.empty():
            self._spool(self._queue.get_nowait())
        self.spool.sync()

    async def _publish(self, subject: str, msg_id: str, data: bytes) -> None:
        await self._js.publish(subject, data, timeout=self._timeout, headers={"Nats-Msg-Id": msg_id})

    def _lost_connection(self, exc: BaseException) -> None:
        log.warning("NATS not acknowledging; spooling", extra={"error": repr(exc)})
        self._js = None
        metrics.CONNECTED.set(0)

    async def _publish_next(self) -> None:
        try:
            item = await asyncio.wait_for(self._queue.get(), 0.5)
        except TimeoutError:
            return
        try:
            await self._publish(*item)
        except Exception as exc:
            self._spool(item)
            self._lost_connection(exc)
            return
        metrics.PUBLISHED.inc()

    async def _replay(self) -> None:
        """Publish the spool in order, a batch in flight at a time; ack each batch's prefix."""
        self._spool_queue()  # keep order: what waits in memory goes behind the spool
        records = self.spool.read(REPLAY_BATCH)
        results = await asyncio.gather(*(self._publish(r.subject, r.msg_id, r.data) for r in records if r.subject),
                                       return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            self._lost_connection(failures[0])
            return  # re-sent next time; JetStream drops the duplicates by Nats-Msg-Id
        self.spool.ack(records[-1])
        metrics.REPLAYED.inc(len(results))
        metrics.PUBLISHED.inc(len(results))
        metrics.SPOOL_BYTES.set(self.spool.size)
