"""The gateway worker's side of the event pipeline: outcomes written ahead to its spool slot.

Recording costs one JSON serialisation and a memory append; a background task writes the
buffer every `FLUSH_S` (and fsyncs it off the event loop under the `batch` policy). The
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

FLUSH_S = 0.05



class SpoolingRecorder:
    """A `Recorder` appending each outcome to a spool slot."""

    def __init__(self, writer: SpoolWriter) -> None:
        self.writer = writer
        self._counters = {kind: (SPOOLED.labels(kind), DROPPED.labels(kind)) for kind in ("chat", "embedding", "retrieval")}
        self._task: asyncio.Task[None] | None = None

    def chat(self, outcome: ChatOutcome) -> None:
        self._append("chat", outcome.correlation_id, outcome)

    def embedding(self, outcome: EmbeddingOutcome) -> None:
        self._append("embedding", outcome.correlation_id, outcome)

    def retrieval(self, outcome: RetrievalOutcome) -> None:
        self._append("retrieval", outcome.correlation_id, outcome)

    def _append(self, kind: str, key: str, outcome: object) -> None:
        spooled, dropped = self._counters[kind]
        if self.writer.append(kind, key, encode(outcome)):
            spooled.inc()
        else:
            dropped.inc()
            log.error("event dropped: spool full", extra={"kind": kind, "correlation_id": key})

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="event-spool-flush")

    async def _flush_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                self.writer.flush()
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
        self.writer.close()


def _fsync(fd: int) -> None:
    with contextlib.suppress(OSError):  # closed meanwhile by a rotation: it was synced then
        os.fsync(fd)
