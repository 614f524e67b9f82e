"""Composition of the event pipeline in a gateway worker: a spool slot of its own and the
recorder writing outcomes into it. Publishing is the relay's (relay_process.py)."""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import Settings
from appliance.events.metrics import RelayMetrics, relay_state, spool_bytes
from appliance.events.recorder import SpoolingRecorder
from appliance.events.spool import SpoolWriter
from appliance.feature import Feature

log = logging.getLogger(__name__)
MAX_SLOTS = 64


def claim_spool_dir(root: Path) -> tuple[Path, int]:
    """The first spool slot no other live process holds (an flock, released when the process
    ends), so a restarted worker takes over the spool its predecessor left."""
    for slot in range(MAX_SLOTS):
        directory = root / str(slot)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return directory, fd
    raise RuntimeError(f"all {MAX_SLOTS} spool slots under {root} are in use")


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
