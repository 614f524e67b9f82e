"""The gateway worker's side of the event pipeline: outcomes written ahead to its spool slot.

Recording costs one JSON serialisation and a memory append; a background task writes the
buffer every `FLUSH_S` (so a crashed process loses nothing it recorded more than that
ago), and under the `batch` policy fsyncs it off the event loop every `fsync_interval_s`
(what a power cut can take). The
relay process publishes from the spool, so nothing here waits on, or even knows about, NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from appliance.domain.records import ChatOutcome, EmbeddingOutcome, RetrievalOutcome
from appliance.events.metrics import DROPPED, SPOOLED
from appliance.events.outcomes import encode
from appliance.events.spool import SpoolWriter

log = logging.getLogger(__name__)
KINDS = ("chat", "embedding", "retrieval")
HOLD_MAX = 2048  # outcomes held between flushes at most (the flush task may be starved)
Outcome = ChatOutcome | EmbeddingOutcome | RetrievalOutcome

FLUSH_S = 0.05



class SpoolingRecorder:
    """A `Recorder` appending each outcome to a spool slot."""

    def __init__(self, writer: SpoolWriter, *, fsync_interval_s: float = 1.0) -> None:
        self.writer = writer
        self._fsync_every = fsync_interval_s
        self._task: asyncio.Task[None] | None = None
        # Counted here and added to the Prometheus counters at each flush: an inc() per
        # outcome is measurable at gateway rates.
        self._spooled = dict.fromkeys(KINDS, 0)
        self._held: list[tuple[str, Outcome]] = []
        self._inline = writer.fsync_policy == "always"  # durable before the response: no holding

    def chat(self, outcome: ChatOutcome) -> None:
        self._later("chat", outcome)

    def embedding(self, outcome: EmbeddingOutcome) -> None:
        self._later("embedding", outcome)

    def retrieval(self, outcome: RetrievalOutcome) -> None:
        self._later("retrieval", outcome)

    def _later(self, kind: str, outcome: Outcome) -> None:
        """Keep the outcome (immutable) for the next flush: serialising a batch at once is
        cheaper than one at a time between requests. A crash loses the same either way:
        what was not yet flushed."""
        self._held.append((kind, outcome))
        if self._inline or len(self._held) >= HOLD_MAX:
            self._write_held()

    def _write_held(self) -> None:
        held, self._held = self._held, []
        append, spooled = self.writer.append, self._spooled
        for kind, outcome in held:
            if append(kind, outcome.correlation_id, encode(outcome)):
                spooled[kind] += 1
            else:
                DROPPED.labels(kind).inc()
                log.error("event dropped: spool full", extra={"kind": kind, "correlation_id": outcome.correlation_id})

    def _count(self) -> None:
        for kind, n in self._spooled.items():
            if n:
                SPOOLED.labels(kind).inc(n)
                self._spooled[kind] = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="event-spool-flush")

    async def _flush_forever(self) -> None:
        loop = asyncio.get_running_loop()
        synced = loop.time()
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                self._write_held()
                self._count()
                self.writer.flush()
                if loop.time() - synced < self._fsync_every:
                    continue
                synced = loop.time()
                fd = self.writer.sync_fd()
                if fd is not None:
                    await loop.run_in_executor(None, _fsync, fd)
            except OSError:
                log.exception("event spool write failed; retrying")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._write_held()
        self._count()
        self.writer.close()


def _fsync(fd: int) -> None:
    with contextlib.suppress(OSError):  # closed meanwhile by a rotation: it was synced then
        os.fsync(fd)
