"""The relay: publishes what the gateway's workers spooled to JetStream, and acknowledges it
in the spool only after JetStream stored it.

One relay per gateway (a child of `appliance serve`, see relay_process.py) reads every
spool slot under `<state>/spool`. A pass takes up to `batch` records from a slot, expands
them into events (outcomes.py), publishes them all without waiting, then waits for every
ack and moves the slot's cursor. A refused or unacknowledged batch is published again
later from the same cursor; the repeats carry the same `Nats-Msg-Id` and JetStream drops
them. While NATS is down nothing moves and the records wait on disk. Counters and state go
to `relay.json` beside the slots every second, for the gateway's `/metrics` and `/readyz`
(the spool root's layout and that file: spool_root.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
from nats.aio.client import Client as NATS

from appliance.domain.ports import Event
from appliance.events.acks import AckTracker, Message
from appliance.events.outcomes import events_of
from appliance.events.spool import Record, SpoolReader
from appliance.events.spool_root import RelayStatus, slot_dirs, slot_in_use, write_status
from appliance.events.streams import connect, ensure_streams, stream_of

log = logging.getLogger(__name__)

STATUS_EVERY_S = 1.0
HEADER_ROOM = 256  # bytes of a message's headers, counted against the server's max_payload


class Relay:
    def __init__(self, root: Path, url: str, *, batch: int, publish_timeout_s: float, duplicate_window_s: float,
                 poll_s: float = 0.1, retry_s: float = 1.0, drain_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self._url = url
        self._batch = batch
        self._timeout = publish_timeout_s
        self._window = duplicate_window_s
        self._poll = poll_s
        self._retry = retry_s
        self._drain = drain_s
        self._clock = clock
        self._nc: NATS | None = None
        self._tracker: AckTracker | None = None
        self._ready = False  # streams ensured and replay marks taken since the last (re)connect
        self._readers: dict[str, SpoolReader] = {}
        self._marks: dict[str, tuple[int, int]] = {}  # per slot: the spool's end when NATS (re)connected
        self.status = RelayStatus(os.getpid())
        self._status_at = 0.0

    @property
    def connected(self) -> bool:
        return self._ready and self._nc is not None and self._nc.is_connected

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; then keep going while workers still write (they flush
        on their way out), and after that until the spool is empty, NATS is gone, or `drain_s`
        has passed."""
        deadline: float | None = None
        last_try = False  # stopping unconnected: one connection attempt (not cut short) was made
        try:
            while True:
                if stop.is_set():
                    self.status.stopping = True
                    if not any(slot_in_use(d) for d in slot_dirs(self.root)):  # the workers have flushed and gone
                        deadline = deadline if deadline is not None else self._clock() + self._drain
                        if self._clock() > deadline or (last_try and not self.connected) or self._spool_bytes() == 0:
                            break
                moved = False
                if self.connected:
                    moved = await self._pass()
                elif not stop.is_set():
                    await _unless(stop, self._connect())
                elif not last_try:  # stopped before it ever connected (a gateway stopped right after start)
                    await self._connect()
                    last_try = True
                self._write_status()
                if moved:
                    continue
                if stop.is_set():
                    await asyncio.sleep(self._poll)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self._poll if self.connected else self._retry)
        finally:
            await self._close()
            for reader in self._readers.values():
                reader.save()
            self._write_status(force=True)

    async def _connect(self) -> None:
        try:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(self._url, name="appliance-relay", timeout_s=self._timeout,
                                         disconnected_cb=self._disconnected)
            elif not self._nc.is_connected:
                return  # nats-py is reconnecting on its own
            await ensure_streams(self._nc.jetstream(timeout=self._timeout), self._window)
            if self._tracker is None:  # its subscription survives reconnections
                self._tracker = AckTracker(self._nc, stream_of)
                await self._tracker.start()
        except Exception as exc:
            log.debug("NATS unavailable; events wait in the spool", extra={"error": repr(exc)})
            return
        self._marks = {name: reader.end() for name, reader in self._slot_readers_by_name().items()}
        self._ready = True
        log.info("event relay connected", extra={"url": self._url, "spool_bytes": self._spool_bytes()})

    async def _disconnected(self) -> None:
        if self._ready:
            self._lost("disconnected")

    def _lost(self, why: BaseException | str) -> None:
        log.warning("NATS not acknowledging; events wait in the spool", extra={"error": repr(why)})
        self._ready = False

    async def _close(self) -> None:
        if self._tracker is not None:
            await self._tracker.stop()
            self._tracker = None
        self._ready = False
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self.status.connected = False

    def _slot_readers_by_name(self) -> dict[str, SpoolReader]:
        for directory in slot_dirs(self.root):
            if directory.name not in self._readers:
                self._readers[directory.name] = SpoolReader(directory)
        return self._readers

    def _slot_readers(self) -> list[SpoolReader]:
        return list(self._slot_readers_by_name().values())

    async def _pass(self) -> bool:
        """One batch from each slot; whether anything was published."""
        moved = False
        for name, reader in self._slot_readers_by_name().items():
            records = reader.read(self._batch)
            if not records:
                continue
            counts = await self._publish(records)
            if counts is None:
                return moved
            reader.ack(records[-1])
            mark = self._marks.get(name, (0, 0))
            self.status.published += sum(counts)
            self.status.replayed += sum(n for r, n in zip(records, counts, strict=True) if (r.segment, r.end) <= mark)
            self.status.corrupt = sum(r.corrupt for r in self._readers.values())
            moved = True
        return moved

    async def _publish(self, records: list[Record]) -> list[int] | None:
        """Publish the events of `records` and wait until JetStream stored them. Returns how
        many events each record stored, or None when the batch must be published again."""
        tracker, nc = self._tracker, self._nc
        assert tracker is not None and nc is not None
        limit = nc.max_payload - HEADER_ROOM
        counts: list[int] = []
        skipped: list[tuple[Record, str]] = []
        messages: list[Message] = []
        for record in records:
            n = 0
            for event in self._events(record, skipped):
                data = orjson.dumps(event.payload, default=str)
                if len(data) > limit:
                    skipped.append((record, f"{event.subject} event of {len(data)} bytes is over NATS max_payload"))
                    continue
                messages.append((event.subject, event.msg_id, data))
                n += 1
            counts.append(n)
        try:
            refused = await tracker.publish(messages, self._timeout) if messages else []
        except Exception as exc:  # timeouts and connection errors alike: publish again later
            self._lost(exc)
            return None
        self.status.chains_broken = tracker.chains_broken
        if refused:
            log.warning("JetStream refused events; the batch will be published again",
                        extra={"refused": len(refused), "error": refused[0]})
            await asyncio.sleep(self._retry)
            return None
        for record, why in skipped:
            self.status.undeliverable += 1
            log.error("event cannot be published; skipped", extra={"correlation_id": record.key, "error": why[:300]})
        return counts

    @staticmethod
    def _events(record: Record, skipped: list[tuple[Record, str]]) -> list[Event]:
        if not record.kind:
            return []  # failed its checksum: counted by the reader
        try:
            return events_of(record.kind, record.data)
        except (ValueError, TypeError, KeyError) as exc:
            skipped.append((record, f"unreadable {record.kind!r} record: {exc}"))
            return []

    def _spool_bytes(self) -> int:
        return sum(r.size() for r in self._slot_readers())

    def _write_status(self, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._status_at < STATUS_EVERY_S:
            return
        self._status_at = now
        for reader in self._readers.values():
            reader.save()
        self.status.ts = time.time()
        self.status.connected = self.connected
        self.status.spool_bytes = self._spool_bytes()
        write_status(self.root, self.status)


async def _unless(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> None:
    """Run `work`, cancelled if `stop` is set first."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, stopped):
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
