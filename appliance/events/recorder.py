"""The gateway worker's side of the event pipeline: outcomes written ahead to its spool slot.

Recording an outcome serialises it and writes it to the spool file (one `os.write`) there
and then, before the response it describes is sent, so a killed worker (or gateway) has
lost nothing it answered: the kernel has the record. What a power cut can take is the
fsync policy's: under `batch` a background task fsyncs off the event loop every
`fsync_interval_s`, one fsync for everything written meanwhile; `always` fsyncs each record
before the response; `never` leaves it to the kernel. The relay process publishes from the
spool, so nothing here waits on, or even knows about, NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from appliance.domain.records import ChatOutcome, EmbeddingOutcome, RetrievalOutcome
from appliance.events.metrics import DROPPED, SPOOLED
from appliance.events.outcomes import encode
from appliance.events.spool import SpoolWriter

log = logging.getLogger(__name__)
KINDS = ("chat", "embedding", "retrieval")
Outcome = ChatOutcome | EmbeddingOutcome | RetrievalOutcome

TICK_S = 0.1  # how often counts reach the Prometheus counters, and held writes are retried


class SpoolingRecorder:
    """A `Recorder` writing each outcome to a spool slot as it is recorded."""

    def __init__(self, writer: SpoolWriter, *, fsync_interval_s: float = 1.0) -> None:
        self.writer = writer
        self._append = writer.append
        self._fsync_every = fsync_interval_s
        self._task: asyncio.Task[None] | None = None
        self._syncing: asyncio.Future[None] | None = None  # the fsync running off the event loop
        # Counted here and added to the Prometheus counters every tick: an inc() per
        # outcome is measurable at gateway rates.
        self._spooled = dict.fromkeys(KINDS, 0)

    def chat(self, outcome: ChatOutcome) -> None:
        self._write("chat", outcome)

    def embedding(self, outcome: EmbeddingOutcome) -> None:
        self._write("embedding", outcome)

    def retrieval(self, outcome: RetrievalOutcome) -> None:
        self._write("retrieval", outcome)

    def _write(self, kind: str, outcome: Outcome) -> None:
        if self._append(kind, outcome.correlation_id, encode(outcome)):
            self._spooled[kind] += 1
        else:
            DROPPED.labels(kind).inc()
            log.error("event dropped: spool full", extra={"kind": kind, "correlation_id": outcome.correlation_id})

    def _count(self) -> None:
        for kind, n in self._spooled.items():
            if n:
                SPOOLED.labels(kind).inc(n)
                self._spooled[kind] = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._tick_forever(), name="event-spool-tick")

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        synced = loop.time()
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._count()
                self.writer.flush()  # what a failed write held, if any; the spool's size
                if loop.time() - synced < self._fsync_every:
                    continue
                synced = loop.time()
                job = self.writer.sync_job()
                if job is not None:
                    # Shielded: a close() meanwhile waits for it rather than closing the
                    # descriptors it is syncing.
                    self._syncing = loop.run_in_executor(None, job)
                    await asyncio.shield(self._syncing)
            except OSError:  # what was written stays written; a later fsync covers what follows
                log.exception("event spool fsync failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._syncing is not None:
            with contextlib.suppress(OSError):
                await self._syncing
        self._count()
        self.writer.close()
