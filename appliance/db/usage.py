"""Usage in PostgreSQL (sql/0120_usage.sql): the persister's writes, the rollups, the reads
of `/admin/usage` and `appliance usage`, and retention.

`record` inserts raw `usage_events` rows (`ON CONFLICT DO NOTHING`) and adds exactly the
rows it inserted to `usage_hourly`, in the caller's transaction: a redelivered event is in
neither twice. Rollup rows are upserted in key order, so two persisters sharing the durable
consumer never deadlock on them. psycopg errors are the caller's (the persister naks the
batch); the reader translates them into `DependencyUnavailable`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, Final

import psycopg

from appliance.db.history import delete_older
from appliance.domain.errors import DependencyUnavailable
from appliance.domain.usage import BUCKETS, UsageQuery, UsageRow, bucket, percentile

log = logging.getLogger(__name__)
Row = dict[str, Any]
_COLUMNS: Final = ("event_id", "correlation_id", "ts", "kind", "key", "model", "backend", "prompt_tokens",
                   "completion_tokens", "cost_usd", "gpu_seconds", "latency_ms", "ttft_ms", "status")
_CHUNK: Final = 2000   # raw rows per INSERT (14 parameters each, well under PostgreSQL's 65535)
_GROUP_SQL: Final = {"key": "key", "model": "model", "backend": "backend",
                     "day": "(hour AT TIME ZONE 'UTC')::date"}
_UPSERT: Final = (
    "INSERT INTO usage_hourly AS u (hour, key, model, backend, requests, prompt_tokens, completion_tokens,"
    " cost_usd, gpu_seconds, errors, latency_buckets) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (hour, key, model, backend) DO UPDATE SET requests = u.requests + EXCLUDED.requests,"
    " prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,"
    " completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,"
    " cost_usd = u.cost_usd + EXCLUDED.cost_usd, gpu_seconds = u.gpu_seconds + EXCLUDED.gpu_seconds,"
    " errors = u.errors + EXCLUDED.errors,"
    " latency_buckets = (SELECT array_agg(a + b ORDER BY i)"
    "   FROM unnest(u.latency_buckets, EXCLUDED.latency_buckets) WITH ORDINALITY AS t(a, b, i))")


def _hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def record(cur: psycopg.AsyncCursor[Any], rows: Sequence[Row]) -> int:
    """Store raw usage rows and add the new ones to the hourly rollup; returns how many were new."""
    fresh: list[Row] = []
    by_id = {r["event_id"]: r for r in rows}
    ordered = list(by_id.values())
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start:start + _CHUNK]
        values = ", ".join(["(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"] * len(chunk))
        await cur.execute(f"INSERT INTO usage_events ({', '.join(_COLUMNS)}) VALUES {values}"
                          " ON CONFLICT DO NOTHING RETURNING event_id",
                          [r[c] for r in chunk for c in _COLUMNS])
        fresh.extend(by_id[eid] for (eid,) in await cur.fetchall())
    groups: dict[tuple[datetime, str, str, str], list[Any]] = {}
    for r in fresh:
        group = (_hour(r["ts"]), r["key"], r["model"], r["backend"])
        acc = groups.get(group)
        if acc is None:
            acc = groups[group] = [0, 0, 0, 0.0, 0.0, 0, [0] * BUCKETS]
        acc[0] += 1
        acc[1] += r["prompt_tokens"]
        acc[2] += r["completion_tokens"]
        acc[3] += r["cost_usd"]
        acc[4] += r["gpu_seconds"]
        acc[5] += r["status"] >= 400
        if r["latency_ms"] is not None:
            acc[6][bucket(r["latency_ms"])] += 1
    if groups:
        await cur.executemany(_UPSERT, [(*g, *acc) for g, acc in sorted(groups.items())])
    return len(fresh)


async def prune(conn: psycopg.AsyncConnection[Any], raw_days: int, rollup_days: int) -> tuple[int, int]:
    """Delete raw rows older than `raw_days` and rollups older than `rollup_days`."""
    async with conn.transaction():
        raw = await delete_older(conn, "usage_events", "ts", raw_days)
        rolled = await delete_older(conn, "usage_hourly", "hour", rollup_days)
    return raw, rolled


def _where(query: UsageQuery) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if query.since is not None:
        clauses.append("hour >= date_trunc('hour', %s::timestamptz)")
        args.append(query.since)
    if query.until is not None:
        clauses.append("hour < %s")
        args.append(query.until)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


async def read(conn: psycopg.AsyncConnection[Any], query: UsageQuery) -> list[UsageRow]:
    """The rollup's totals per group, with p50/p95 from the summed latency histograms."""
    cols = [_GROUP_SQL[g] for g in query.group_by]
    names = ", ".join(cols)
    where, args = _where(query)
    totals = await (await conn.execute(
        f"SELECT {names}, sum(requests), sum(prompt_tokens), sum(completion_tokens), sum(cost_usd),"
        f" sum(gpu_seconds), sum(errors) FROM usage_hourly{where} GROUP BY {names} ORDER BY {names}", args)).fetchall()
    hist: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * BUCKETS)
    for *group, i, n in await (await conn.execute(
            f"SELECT {names}, b.i, sum(b.n) FROM usage_hourly, unnest(latency_buckets) WITH ORDINALITY AS b(n, i)"
            f"{where} GROUP BY {names}, b.i", args)).fetchall():
        hist[tuple(group)][int(i) - 1] = int(n)
    out = []
    k = len(cols)
    for row in totals:
        group = dict(zip(query.group_by, row[:k], strict=True))
        requests, prompt, completion, cost, gpu, errors = row[k:]
        counts = hist[tuple(row[:k])]
        day = group.get("day")
        out.append(UsageRow(
            key=(group["key"] or None) if "key" in group else None, model=group.get("model"),
            backend=group.get("backend"), day=day if isinstance(day, date) else None, requests=int(requests),
            prompt_tokens=int(prompt), completion_tokens=int(completion), cost_usd=float(cost),
            gpu_seconds=float(gpu), errors=int(errors), latency_p50_ms=percentile(counts, 0.5),
            latency_p95_ms=percentile(counts, 0.95)))
    return out


class PgUsageReader:
    """The `UsageReader` over PostgreSQL: one short connection per query (admin calls are rare,
    and so the gateway holds no connection for them)."""

    def __init__(self, url: str, connect_timeout_s: float = 5.0) -> None:
        self._url = url
        self._timeout = connect_timeout_s

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        try:
            async with await psycopg.AsyncConnection.connect(self._url, autocommit=True,
                                                             connect_timeout=int(self._timeout)) as conn:
                return await read(conn, query)
        except psycopg.errors.UndefinedTable as exc:
            raise DependencyUnavailable("usage tables are missing: run `appliance migrate`") from exc
        except psycopg.Error as exc:
            log.warning("usage query failed", extra={"error": repr(exc)})
            raise DependencyUnavailable("PostgreSQL is unavailable") from exc
