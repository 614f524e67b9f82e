"""The worker's background link to the shared store: keys, counters and the audit queue.

Every `sync_s` (0.25 s): the limiter's deltas go to PostgreSQL and the totals come back
(one pipelined round trip; nothing between keys polls when no limited key was used in the
last two minutes);
queued audit events are written. At the keys poll's pace, the totals of the limited keys
this worker has not used lately are read too (index lookups, no write), so a key that is
busy elsewhere, or has spent its budget elsewhere, is judged on that by its first request
here. Every `keys_poll_s` (1 s): `api_keys`' row count and newest change are compared with
the last seen, and the table is read again when they moved, so a key created, rotated or
revoked anywhere takes effect in every worker within about a second.

When PostgreSQL is unreachable it says so once (and once when it is back): the workers go
on with the last key snapshot they had and their own counts on top of the last totals
(limits hold per worker, not across them); audit events wait in their bounded queue.
Every key set read is also kept as a snapshot under the state dir (`access/keys.json`: hashes
and limits, never a secret), so a worker that starts while PostgreSQL is down goes on with the
keys it last knew (and a gateway that had no stored keys stays open on loopback). Only with no
snapshot either, a gateway that has a store refuses every key but the catalog's until the store
has answered once (`KeyDirectory.loaded`, `AccessControl`): a store that is down must not open the door.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

from appliance.access.audit import AuditWriter
from appliance.access.store import PgAccessStore
from appliance.domain.access import AccessControl
from appliance.domain.errors import DependencyUnavailable
from appliance.domain.keys import KeyRecord
from appliance.domain.limits import WINDOW_S, SyncBatch

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 60.0


class AccessSync:
    def __init__(self, store: PgAccessStore, control: AccessControl, audit: AuditWriter, *, sync_s: float,
                 keys_poll_s: float, keep_s: int, snapshot: Path | None = None) -> None:
        self._store = store
        self._snapshot = snapshot
        self._control = control
        self._audit = audit
        self._sync_s = sync_s
        self._poll_s = keys_poll_s
        self._keep_minutes = max(2, keep_s // WINDOW_S)
        self._version: tuple[int, float] | None = None
        self._polled_at = 0.0
        self._pruned_at = time.monotonic()
        self._down = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._store.open()
        try:
            await self.poll_keys()
        except DependencyUnavailable as exc:
            self._went_down(exc)
            self._load_snapshot()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(DependencyUnavailable, asyncio.TimeoutError):
            async with asyncio.timeout(2):
                await self.tick(force_poll=False)  # the last counts and audit events
        await self._store.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._sync_s)
            try:
                await self.tick()
            except Exception:  # the loop must outlive anything
                log.exception("access sync failed")

    async def poll_keys(self) -> None:
        self._polled_at = time.monotonic()
        version = await self._store.version()
        if version is None:
            if not self._control.directory.loaded:
                log.warning("the access tables are missing (run `appliance migrate`): only the catalog's keys work")
            if not self._control.directory.loaded:
                self._save_snapshot([])
            self._control.directory.replace_stored(())
        elif version != self._version:
            keys = await self._store.keys()
            self._control.directory.replace_stored(keys)
            self._save_snapshot(keys)
        self._version = version

    def _save_snapshot(self, keys: list[KeyRecord]) -> None:
        if self._snapshot is None:
            return
        try:
            self._snapshot.parent.mkdir(parents=True, exist_ok=True)
            part = self._snapshot.with_name(f"{self._snapshot.name}.{os.getpid()}")
            part.write_bytes(json.dumps([dataclasses.asdict(k) for k in keys]).encode())
            os.chmod(part, 0o600)
            part.replace(self._snapshot)
        except OSError as exc:
            log.warning("could not keep the key snapshot", extra={"path": str(self._snapshot), "error": str(exc)})

    def _load_snapshot(self) -> None:
        if self._snapshot is None or not self._snapshot.exists():
            return
        try:
            rows = json.loads(self._snapshot.read_bytes())
            keys = [KeyRecord(**{**row, "models": tuple(row["models"]), "workspaces": tuple(row["workspaces"])})
                    for row in rows]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("the key snapshot is unreadable; only the catalog's keys work until PostgreSQL answers",
                        extra={"path": str(self._snapshot), "error": str(exc)})
            return
        self._control.directory.replace_stored(keys)
        log.warning("access store unreachable at start: using the key snapshot it last gave",
                    extra={"path": str(self._snapshot), "keys": len(keys)})

    async def tick(self, force_poll: bool = True) -> None:
        """One sync: counts, audit, and the keys when their poll is due."""
        batch: SyncBatch | None = None
        try:
            polled = force_poll and time.monotonic() - self._polled_at >= self._poll_s
            if polled:
                await self.poll_keys()
            batch = self._control.limiter.take(self._control.directory.limited, read=polled)
            if batch.counts or batch.spend or batch.read_counts or batch.read_spend:
                counts, spend = await self._store.sync(batch)
                self._control.limiter.absorb(counts, spend)
            batch = None
            events = self._audit.take()
            try:
                await self._store.write_audit(events)
            except DependencyUnavailable:
                self._audit.give_back(events)
                raise
            if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                self._pruned_at = time.monotonic()
                await self._store.prune(self._keep_minutes, int(time.time() // WINDOW_S))
                self._control.sweep()
        except DependencyUnavailable as exc:
            if batch is not None:
                self._control.limiter.restore(batch)
            self._went_down(exc)
            return
        if self._down:
            self._down = False
            log.warning("access store reachable again: limits are shared across workers again")

    def _went_down(self, exc: DependencyUnavailable) -> None:
        if not self._down:
            self._down = True
            log.warning("access store unreachable: each worker limits keys on its own counts, with the last "
                        "keys it read, until it is back", extra={"error": exc.message})
