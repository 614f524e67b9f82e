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
from appliance.events.acks import AckTracker, Item
from appliance.events.spool import Spool
from appliance.events.streams import connect, ensure_streams

log = logging.getLogger(__name__)

REPLAY_BATCH = 256
TICK_S = 0.25
MAX_IN_FLIGHT = 4096  # published, not yet acknowledged
PUBLISH_BURST = 256  # sent before yielding to the event loop


class EventPublisher:
    """The gateway's `EventSink`."""

    def __init__(self, url: str | None, spool: Spool, *, queue_max: int, publish_timeout_s: float,
                 duplicate_window_s: float, retry_s: float = 1.0) -> None:
        self._url = url
        self.spool = spool
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue(queue_max)  # None: a tick
        self._timeout = publish_timeout_s
        self._window = duplicate_window_s
        self._retry = retry_s
        self._nc: NATS | None = None
        self._js: Any = None
        self._task: asyncio.Task[None] | None = None
        self._tracker: AckTracker | None = None
        self._ticker: asyncio.Task[None] | None = None
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
        self._ticker = asyncio.create_task(self._tick(), name="event-publisher-tick")

    async def _tick(self) -> None:
        """Wakes an idle publisher (spool replay, ack timeouts) without a timer per event."""
        while True:
            await asyncio.sleep(TICK_S)
            if self._queue.empty():
                self._queue.put_nowait(None)

    async def close(self, drain_s: float = 5.0) -> None:
        """Publish what is queued if NATS answers within `drain_s`; spool the rest."""
        self._stopping = True
        if self._ticker is not None:
            self._ticker.cancel()
        if self._task is not None:
            with contextlib.suppress(Exception):  # includes the drain timing out
                await asyncio.wait_for(self._drain(), drain_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._tracker is not None:
            for item in self._tracker.take_all():
                self._spool(item)
        self._spool_queue()
        self.spool.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def _drain(self) -> None:
        while (not self._queue.empty() or (self._tracker and self._tracker.pending)) and self.connected:
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
        if self._tracker is not None:
            for item in self._tracker.take_all():  # their acks will not come on this connection
                self._spool(item)
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
            if self._tracker is not None:
                await self._tracker.stop()
            self._tracker = AckTracker(self._nc, self._acked, self._refused)
            await self._tracker.start()
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
            item = self._queue.get_nowait()
            if item is not None:
                self._spool(item)
        self.spool.sync()

    async def _publish(self, subject: str, msg_id: str, data: bytes) -> None:
        await self._js.publish(subject, data, timeout=self._timeout, headers={"Nats-Msg-Id": msg_id})

    def _lost_connection(self, exc: BaseException) -> None:
        log.warning("NATS not acknowledging; spooling", extra={"error": repr(exc)})
        self._js = None
        metrics.CONNECTED.set(0)
        if self._tracker is not None:
            for item in self._tracker.take_all():  # unacked: JetStream de-duplicates if they did land
                self._spool(item)

    def _acked(self, n: int) -> None:
        metrics.PUBLISHED.inc(n)

    def _refused(self, item: Item, error: str) -> None:
        log.warning("JetStream refused an event; spooled for retry", extra={"subject": item[0], "error": error[:200]})
        self._spool(item)

    async def _publish_next(self) -> None:
        """Send what is queued without waiting for each ack; acks are matched as they come."""
        tracker = self._tracker
        assert tracker is not None
        late = tracker.expired(self._timeout)
        if late:
            for expired in late:
                self._spool(expired)
            self._lost_connection(TimeoutError(f"{len(late)} acks not received in {self._timeout}s"))
            return
        if len(tracker.pending) >= MAX_IN_FLIGHT:
            await asyncio.sleep(0.001)
            return
        item = await self._queue.get()
        sent = 0
        try:
            while True:
                if item is not None:
                    await tracker.publish(item)
                    sent += 1
                if sent >= PUBLISH_BURST or len(tracker.pending) >= MAX_IN_FLIGHT or self._queue.empty():
                    break
                item = self._queue.get_nowait()
        except Exception as exc:
            if item is not None:
                self._spool(item)
            self._lost_connection(exc)

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
