"""The spool root, `<state>/spool`: the slots the workers write and the relay's status file.

Layout, shared by the gateway's workers and its relay:

    <state>/spool/
        0/ 1/ ...          a slot each: one worker's spool (segments and cursor, spool.py) and
                           `.lock`, flocked by the worker that holds the slot for as long as it
                           lives (`claim_spool_dir` gives it the first free slot, so a restarted worker
                           takes over what its predecessor left)
        relay.json         the relay's status, replaced (written aside, renamed) every second
        .relay.json.tmp    the next status while it is written

`relay.json` is one JSON object, the fields of `RelayStatus`. The workers read it at scrape
time for `/metrics` and `/readyz` (metrics.py), so whichever worker answers sees the same
numbers; a status older than a few seconds, or with `stopping` set, means no relay runs.
A reader takes what it finds: a missing or unreadable file is no status, unknown fields are
ignored.

Nothing here imports the NATS client: every worker imports this module to read a file.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

STATUS_FILE = "relay.json"
MAX_SLOTS = 64


@dataclass(slots=True)
class RelayStatus:
    """What the relay reports, as `relay.json` holds it."""

    pid: int
    ts: float = 0.0         # unix time of this status
    connected: bool = False
    published: int = 0      # events JetStream acknowledged
    replayed: int = 0       # of those, events that had waited in the spool through an outage or a restart
    undeliverable: int = 0  # events that can never be published (unreadable record, over max_payload)
    corrupt: int = 0        # spool records that failed their checksum
    chains_broken: int = 0  # batches published with an ack per event after all (events/acks.py)
    spool_bytes: int = 0
    stopping: bool = False


def write_status(root: Path, status: RelayStatus) -> None:
    """Replace `relay.json` under `root`: a reader sees the old status or the new, never half."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{STATUS_FILE}.tmp"
    tmp.write_bytes(orjson.dumps(asdict(status)))
    os.replace(tmp, root / STATUS_FILE)


def read_status(root: Path) -> dict[str, object] | None:
    """The relay's last status under `root`, None when there is none (or none readable)."""
    try:
        status = orjson.loads((root / STATUS_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def slot_dirs(root: Path) -> list[Path]:
    """The slots under `root`, in slot order."""
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)) \
        if root.is_dir() else []


def slot_in_use(directory: Path) -> bool:
    """Whether a live worker holds this slot (its flock)."""
    try:
        fd = os.open(directory / ".lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock if we took it
    return False


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
