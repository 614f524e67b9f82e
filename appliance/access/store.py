"""Keys, shared counters and the audit trail in PostgreSQL (sql/0200_access.sql).

One small psycopg pool per process. What the workers run, every `sync_s`: one upsert of the
count deltas (and one of spend deltas, in the same pipeline) that returns the totals, and
every `keys_poll_s` one `count/max(updated_at)` of `api_keys`, then the table again only when
that changed. Key administration (CLI and `/admin/keys`) writes the key and its audit row in
one transaction. psycopg and pool errors become `DependencyUnavailable` here; a missing
table (not migrated) reads as no keys.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg
import psycopg_pool
from psycopg.types.json import Jsonb

from appliance.domain.access import AuditEvent
from appliance.domain.errors import DependencyUnavailable, InvalidRequest, NotFound
from appliance.domain.keys import SHOWN_CHARS, KeyRecord, KeySpec, digest, new_secret, weakness
from appliance.domain.limits import SyncBatch

log = logging.getLogger(__name__)

_COLUMNS: Final = ("name, sha256, shown, models, workspaces, rpm, tpm, budget_usd, period, expires_at, admin, "
                   "created_at, rotated_at, revoked_at")
_COUNTS: Final = """
INSERT INTO key_usage_windows AS w (key_name, minute, requests, tokens)
SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[])
ON CONFLICT (key_name, minute) DO UPDATE
  SET requests = w.requests + excluded.requests, tokens = w.tokens + excluded.tokens
RETURNING key_name, minute, requests, tokens
"""
_SPEND: Final = """
INSERT INTO key_spend AS s (key_name, period, spend_usd)
SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[])
ON CONFLICT (key_name, period) DO UPDATE SET spend_usd = s.spend_usd + excluded.spend_usd
RETURNING key_name, period, spend_usd
"""
# Totals of keys a worker has not used lately, read only (their primary keys: index lookups).
_READ_COUNTS: Final = """
SELECT w.key_name, w.minute, w.requests, w.tokens
FROM unnest(%s::text[], %s::bigint[]) AS r (key_name, since)
JOIN key_usage_windows AS w ON w.key_name = r.key_name AND w.minute >= r.since AND w.minute <= r.since + 1
"""
_READ_SPEND: Final = """
SELECT s.key_name, s.period, s.spend_usd
FROM unnest(%s::text[], %s::text[]) AS r (key_name, period)
JOIN key_spend AS s ON s.key_name = r.key_name AND s.period = r.period
"""
_AUDIT: Final = ("INSERT INTO audit_log (ts, event, key_name, actor, status, method, path, correlation_id, detail) "
                 "VALUES (to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s, %s)")


def _epoch(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _record(row: Sequence[Any]) -> KeyRecord:
    return KeyRecord(name=row[0], sha256=row[1], shown=row[2], models=tuple(row[3]), workspaces=tuple(row[4]),
                     rpm=row[5], tpm=row[6], budget_usd=row[7], period=row[8], expires_at=_epoch(row[9]),
                     admin=row[10], created_at=_epoch(row[11]), rotated_at=_epoch(row[12]),
                     revoked_at=_epoch(row[13]))


def _audit_row(e: AuditEvent) -> tuple[Any, ...]:
    return (e.ts, e.event, e.key, e.actor, e.status, e.method, e.path, e.correlation_id, Jsonb(dict(e.detail)))


class PgAccessStore:
    """The access tables over a small async pool (see the module docstring)."""

    def __init__(self, url: str, *, max_size: int = 2, connect_timeout_s: float = 2.0) -> None:
        self._pool = psycopg_pool.AsyncConnectionPool(
            url, min_size=1, max_size=max_size, open=False, timeout=connect_timeout_s,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout_s))})

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.errors.UniqueViolation as exc:
            raise InvalidRequest("That key is in use by another name", param="key") from exc
        except psycopg.errors.UndefinedTable as exc:
            raise DependencyUnavailable("the access tables are missing: run `appliance migrate`") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
            raise DependencyUnavailable(f"PostgreSQL unreachable: {type(exc).__name__}") from exc

    # -- what every worker runs --

    async def version(self) -> tuple[int, float] | None:
        """(rows, newest change) of `api_keys`, None before it is migrated."""
        try:
            async with self._conn() as conn:
                cur = await conn.execute(
                    "SELECT count(*), coalesce(extract(epoch FROM max(updated_at)), 0)::float8 FROM api_keys")
                row = await cur.fetchone()
        except DependencyUnavailable as exc:
            if isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
                return None
            raise
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    async def keys(self) -> list[KeyRecord]:
        async with self._conn() as conn:
            cur = await conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY name")
            return [_record(r) for r in await cur.fetchall()]

    async def sync(self, batch: SyncBatch) -> tuple[list[tuple[str, int, int, int]], list[tuple[str, str, float]]]:
        """Add the batch's deltas; the totals after them (rows sorted: one lock order for all),
        and those of the keys it only reads."""
        counts = sorted(batch.counts)
        spend = sorted(batch.spend)
        reads, read_spend = batch.read_counts, batch.read_spend
        async with self._conn() as conn, conn.pipeline():
            c1 = await conn.execute(_COUNTS, ([r[0] for r in counts], [r[1] for r in counts],
                                              [r[2] for r in counts], [r[3] for r in counts])) if counts else None
            c2 = await conn.execute(_SPEND, ([r[0] for r in spend], [r[1] for r in spend],
                                             [r[2] for r in spend])) if spend else None
            c3 = await conn.execute(_READ_COUNTS, ([r[0] for r in reads], [r[1] for r in reads])) if reads else None
            c4 = await conn.execute(_READ_SPEND, ([r[0] for r in read_spend],
                                                  [r[1] for r in read_spend])) if read_spend else None
            totals = [(str(r[0]), int(r[1]), int(r[2]), int(r[3]))
                      for c in (c1, c3) if c is not None for r in await c.fetchall()]
            spent = [(str(r[0]), str(r[1]), float(r[2])) for c in (c2, c4) if c is not None for r in await c.fetchall()]
        return totals, spent

    async def write_audit(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        async with self._conn() as conn, conn.cursor() as cur:
            await cur.executemany(_AUDIT, [_audit_row(e) for e in events])

    async def prune(self, keep_minutes: int, now_minute: int) -> None:
        async with self._conn() as conn:
            await conn.execute("DELETE FROM key_usage_windows WHERE minute < %s", (now_minute - keep_minutes,))

    # -- administration: the CLI and /admin/keys --

    async def list_keys(self) -> list[KeyRecord]:
        return await self.keys()

    async def active_keys(self) -> int:
        async with self._conn() as conn:
            cur = await conn.execute("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL "
                                     "AND (expires_at IS NULL OR expires_at > now())")
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def create(self, spec: KeySpec, *, actor: str, secret: str | None = None) -> tuple[KeyRecord, str]:
        """A new key (or `secret`, when one is imported, unless weak); a revoked key's name
        may be used again. The secret is returned once and never stored."""
        if secret is None:
            secret = new_secret()
        elif (why := weakness(secret)) is not None:
            raise InvalidRequest(f"That key is refused: {why}", param="key")
        expires = dt.datetime.fromtimestamp(spec.expires_at, dt.UTC) if spec.expires_at is not None else None
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                f"""INSERT INTO api_keys (name, sha256, shown, models, workspaces, rpm, tpm, budget_usd, period,
                                         expires_at, admin)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, shown = excluded.shown,
                        models = excluded.models, workspaces = excluded.workspaces, rpm = excluded.rpm,
                        tpm = excluded.tpm, budget_usd = excluded.budget_usd, period = excluded.period,
                        expires_at = excluded.expires_at, admin = excluded.admin, created_at = now(),
                        rotated_at = NULL, revoked_at = NULL, updated_at = now()
                    WHERE api_keys.revoked_at IS NOT NULL
                    RETURNING {_COLUMNS}""",
                (spec.name, digest(secret), secret[:SHOWN_CHARS], list(spec.models), list(spec.workspaces),
                 spec.rpm, spec.tpm, spec.budget_usd, spec.period, expires, spec.admin))
            row = await cur.fetchone()
            if row is None:
                raise InvalidRequest(f"A key named '{spec.name}' exists: revoke or rotate it", param="name")
            record = _record(row)
            await self._audit(conn, AuditEvent("key.created", spec.name, actor=actor, detail=_limits(record)))
        return record, secret

    async def revoke(self, name: str, *, actor: str) -> KeyRecord:
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(f"UPDATE api_keys SET revoked_at = now(), updated_at = now() "
                                     f"WHERE name = %s AND revoked_at IS NULL RETURNING {_COLUMNS}", (name,))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"No active key named '{name}'", param="name")
            await self._audit(conn, AuditEvent("key.revoked", name, actor=actor))
        return _record(row)

    async def rotate(self, name: str, *, actor: str) -> tuple[KeyRecord, str]:
        """A new secret for the key, same name and limits; the old secret stops working."""
        secret = new_secret()
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                f"UPDATE api_keys SET sha256 = %s, shown = %s, rotated_at = now(), updated_at = now() "
                f"WHERE name = %s AND revoked_at IS NULL RETURNING {_COLUMNS}",
                (digest(secret), secret[:SHOWN_CHARS], name))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"No active key named '{name}'", param="name")
            await self._audit(conn, AuditEvent("key.rotated", name, actor=actor))
        return _record(row), secret

    async def _audit(self, conn: psycopg.AsyncConnection[Any], event: AuditEvent) -> None:
        await conn.execute(_AUDIT, _audit_row(event))
        log.info(f"audit: {event.event}", extra={"audit": event.event, "key": event.key, "actor": event.actor})


def _limits(record: KeyRecord) -> dict[str, Any]:
    return {k: v for k, v in record.public().items()
            if k in ("models", "workspaces", "rpm", "tpm", "budget_usd", "period", "expires_at", "admin") and v}
