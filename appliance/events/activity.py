"""`ActivityLog` over the persister's tables in PostgreSQL (sql/0100_events.sql, 0101).

A small pool of its own (two connections at most, opened on first use): the page is read by
a person, never on the chat path. psycopg's errors become `DependencyUnavailable` here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import psycopg_pool

from appliance.domain.errors import DependencyUnavailable

_RECENT = """
SELECT p.event_id, p.correlation_id, p.ts, p.model, h.backend, h.route, h.workspace,
       h.prompt_tokens, h.completion_tokens, h.latency_ms, h.ttft_ms, h.cost_usd,
       h.prompt_name, h.prompt_version, left(p.prompt, 160)
FROM chat_pairs p LEFT JOIN chat_history h ON h.event_id = p.event_id
WHERE %(workspaces)s::text[] IS NULL OR h.workspace = ANY(%(workspaces)s::text[])
ORDER BY p.ts DESC, p.event_id LIMIT %(limit)s"""

_ONE = """
SELECT p.event_id, p.correlation_id, p.ts, p.model, h.backend, h.route, h.workspace,
       h.prompt_tokens, h.completion_tokens, h.latency_ms, h.ttft_ms, h.cost_usd,
       h.prompt_name, h.prompt_version, p.prompt, p.response, p.system, h.sources
FROM chat_pairs p LEFT JOIN chat_history h ON h.event_id = p.event_id
WHERE p.event_id = %s"""

# The passages the chat's retrieval found, in rank order, with their text where the chunk
# is still stored (a document deleted or changed since leaves the text empty).
_SOURCES = """
SELECT e.ord, e.hit->>'document_id', (e.hit->>'chunk_index')::int, (e.hit->>'score')::float8, c.content
FROM retrievals r
CROSS JOIN LATERAL jsonb_array_elements(r.hits) WITH ORDINALITY AS e(hit, ord)
LEFT JOIN document_chunks c ON c.workspace = r.workspace AND c.document_id = e.hit->>'document_id'
                           AND c.chunk_index = (e.hit->>'chunk_index')::int
WHERE r.correlation_id = %s
ORDER BY r.ts, e.ord"""

_FIELDS = ("event_id", "correlation_id", "ts", "model", "backend", "route", "workspace", "prompt_tokens",
           "completion_tokens", "latency_ms", "ttft_ms", "cost_usd", "prompt_name", "prompt_version")


def _row(values: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_FIELDS, values, strict=False))
    out["ts"] = out["ts"].isoformat()
    return out


class PgActivityLog:
    def __init__(self, url: str, *, connect_timeout_s: float = 2.0) -> None:
        self._pool = psycopg_pool.AsyncConnectionPool(
            url, min_size=0, max_size=2, open=False, timeout=connect_timeout_s,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout_s))}, reconnect_timeout=0)
        self._opened = False

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if not self._opened:
            await self._pool.open(wait=False)
            self._opened = True
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.errors.UndefinedTable as exc:
            raise DependencyUnavailable("the event tables are missing: run `appliance migrate`") from exc
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.InterfaceError) as exc:
            raise DependencyUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}") from exc

    async def recent(self, limit: int, workspaces: Sequence[str] | None = None) -> list[dict[str, Any]]:
        params = {"limit": limit, "workspaces": list(workspaces) if workspaces else None}
        async with self._conn() as conn:
            rows = await (await conn.execute(_RECENT, params)).fetchall()
        return [{**_row(r[:14]), "question": r[14]} for r in rows]

    async def detail(self, event_id: str) -> dict[str, Any] | None:
        async with self._conn() as conn:
            row = await (await conn.execute(_ONE, (event_id,))).fetchone()
            if row is None:
                return None
            hits = await (await conn.execute(_SOURCES, (row[1],))).fetchall()
        out = _row(row[:14])
        out.update(prompt=row[14], response=row[15], system=row[16], source_ids=row[17] or [],
                   sources=[{"number": n, "document_id": d, "chunk_index": i, "score": s, "content": c}
                            for n, d, i, s, c in hits])
        return out
