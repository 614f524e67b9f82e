"""Composition of the event pipeline for the gateway: a spool slot per worker, the publisher,
and the recorder that turns outcomes into events."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.domain.events import EventRecorder
from appliance.events.publisher import EventPublisher
from appliance.events.spool import Spool

if TYPE_CHECKING:
    from appliance.services import Services

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


def add_events(services: Services) -> EventPublisher | None:
    settings = services.settings
    cfg = settings.events
    if not cfg.enabled:
        return None
    if not settings.nats_url:
        log.info("event pipeline off: APPLIANCE_NATS_URL is not set")
        return None
    directory, lock_fd = claim_spool_dir(settings.state_dir / "spool")
    spool = Spool(directory, max_bytes=cfg.spool_max_bytes, segment_bytes=cfg.spool_segment_bytes, fsync=cfg.spool_fsync)
    publisher = EventPublisher(settings.nats_url, spool, queue_max=cfg.queue_max,
                               publish_timeout_s=cfg.publish_timeout_s, duplicate_window_s=cfg.duplicate_window_s)
    if spool.pending():
        log.info("spooled events from a previous run will be replayed", extra={"bytes": spool.size})

    async def close() -> None:
        await publisher.close()
        os.close(lock_fd)

    async def readiness() -> dict[str, Any]:
        # NATS down degrades nothing a client sees: events wait in the spool.
        return {"ok": publisher.connected, "spool_bytes": spool.size}

    services.add_recorder(EventRecorder(publisher))
    services.starters.append(publisher.start)
    services.closers.append(close)
    services.readiness["nats"] = readiness
    return publisher
