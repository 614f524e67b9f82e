"""Composition of the event pipeline in a gateway worker: a spool slot of its own and the
recorder writing outcomes into it. Publishing is the relay's (relay_process.py)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from appliance.config import Settings
from appliance.events.metrics import RelayMetrics, relay_state, spool_bytes
from appliance.events.recorder import SpoolingRecorder
from appliance.events.spool import SpoolWriter
from appliance.events.spool_root import claim_spool_dir
from appliance.feature import Feature

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Events:
    recorder: SpoolingRecorder
    feature: Feature


def build_events(settings: Settings) -> Events | None:
    """The worker's spool writer and recorder; None when events are off (no NATS URL)."""
    cfg = settings.events
    if not settings.events_on:
        if cfg.enabled:
            log.info("event pipeline off: APPLIANCE_NATS_URL is not set")
        return None
    root = settings.state_dir / "spool"
    directory, lock_fd = claim_spool_dir(root)
    writer = SpoolWriter(directory, max_bytes=cfg.spool_max_bytes, segment_bytes=cfg.spool_segment_bytes,
                         fsync=cfg.spool_fsync)
    recorder = SpoolingRecorder(writer, fsync_interval_s=cfg.spool_fsync_interval_s)

    async def close() -> None:
        await recorder.close()
        os.close(lock_fd)

    async def readiness() -> dict[str, Any]:
        # NATS or the relay down degrades nothing a client sees: events wait in the spool.
        status, fresh = relay_state(root)
        return {"ok": fresh and bool(status.get("connected")), "relay": "running" if fresh else "not running",
                "spool_bytes": spool_bytes(root)}

    return Events(recorder, Feature("events", start=recorder.start, close=close, readiness={"nats": readiness},
                                    collectors=(RelayMetrics(root),)))
