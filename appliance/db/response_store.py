"""Stored Responses in PostgreSQL (`api_responses`, sql/0210_api_responses.sql and 0211's
`owner`): a psycopg 3 async pool, one row per response, written by the gateway itself (not
through the event pipeline) so a response is readable the moment its create has answered,
from any worker. Every read and delete matches the owner with the id, in SQL.

A continuation reads its whole chain in one recursive query. A write is committed (visible
to every reader) before `save` returns; by default it does not wait for its WAL flush
(`synchronous_commit = off` for this pool only), most of its time on a busy disk: a PostgreSQL crash
can lose the last fraction of a second of stored responses, never corrupt them.
`APPLIANCE_RESPONSES__SYNCHRONOUS_COMMIT=true` waits. psycopg and pool errors become
`DependencyUnavailable` here; a breaker refuses at once while PostgreSQL stays down, so a
create that cannot store waits out one connect timeout at most, then answers without.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Final

import orjson
import psycopg
import psycopg_pool
from prometheus_client import Counter, Gauge
from psycopg.types.json import Jsonb, set_json_dumps, set_json_loads

from appliance.db.guarded import guarded_connection
from appliance.domain.breaker import Breaker, reporter
from appliance.domain.errors import DependencyUnavailable, InvalidRequest
from appliance.domain.ports import StoredResponse

log = logging.getLogger(__name__)

_COLUMNS: Final = "id, correlation_id, model, status, previous_response_id, input_items, response, owner"
_SAVE: Final = f"""
INSERT INTO api_responses ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, response = EXCLUDED.response
WHERE api_responses.owner = EXCLUDED.owner
"""
_CHAIN: Final = f"""
WITH RECURSIVE chain AS (
    SELECT {_COLUMNS}, 1 AS depth FROM api_responses WHERE id = %(id)s AND owner = %(owner)s
    UNION ALL
    SELECT r.id, r.correlation_id, r.model, r.status, r.previous_response_id, r.input_items, r.response, r.owner,
           c.depth + 1
    FROM api_responses r JOIN chain c ON r.id = c.previous_response_id
    WHERE c.depth < %(limit)s AND r.owner = %(owner)s
)
SELECT {_COLUMNS} FROM chain ORDER BY depth DESC
"""

BREAKER_STATE = Gauge("appliance_responses_store_breaker_state",
                      "Responses store breaker: 0 closed, 1 open, 2 half-open", ["breaker"], multiprocess_mode="max")
UNSTORED = Counter("appliance_responses_unstored_total", "Responses with store: true that could not be stored")

_report = reporter(lambda name, state: BREAKER_STATE.labels(name).set(state), log,
                   opened="PostgreSQL breaker open: responses are answered without being stored until it is back",
                   closed="PostgreSQL breaker closed: responses are stored again")


class PgResponseStore:
    """`ResponseStore` over a pooled async connection to PostgreSQL."""

    def __init__(self, url: str, *, max_size: int = 4, connect_timeout_s: float = 2.0,
                 breaker_cooldown_s: float = 5.0, breaker_max_cooldown_s: float = 60.0,
                 synchronous_commit: bool = False) -> None:
        self._breaker = Breaker(breaker_cooldown_s, max_cooldown_s=breaker_max_cooldown_s, name="responses",
                                on_change=_report)
        self._pool = psycopg_pool.AsyncConnectionPool(
            url, min_size=1, max_size=max_size, open=False, timeout=connect_timeout_s,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout_s)),
                    "options": f"-c synchronous_commit={'on' if synchronous_commit else 'off'}"},
            configure=self._configure, reconnect_timeout=0,
        )

    @staticmethod
    async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
        # orjson for the jsonb columns: the stdlib's json costs several times more per response.
        set_json_dumps(orjson.dumps, conn)
        set_json_loads(orjson.loads, conn)

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    def _conn(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        return guarded_connection(self._pool, self._breaker,
                                  missing="the api_responses table is missing; run `appliance migrate`")

    async def save(self, stored: StoredResponse) -> None:
        try:
            async with self._conn() as conn:
                await conn.execute(_SAVE, (stored.id, stored.correlation_id, stored.model, stored.status,
                                           stored.previous_response_id, Jsonb(list(stored.input_items)),
                                           Jsonb(dict(stored.response)), stored.owner))
        except (DependencyUnavailable, InvalidRequest):
            UNSTORED.inc()
            raise

    async def get(self, response_id: str, *, owner: str) -> StoredResponse | None:
        async with self._conn() as conn:
            row = await (await conn.execute(f"SELECT {_COLUMNS} FROM api_responses WHERE id = %s AND owner = %s",
                                            (response_id, owner))).fetchone()
        return _stored(row) if row else None

    async def delete(self, response_id: str, *, owner: str) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute("DELETE FROM api_responses WHERE id = %s AND owner = %s", (response_id, owner))
        return cur.rowcount > 0

    async def chain(self, response_id: str, limit: int, *, owner: str) -> list[StoredResponse]:
        async with self._conn() as conn:
            rows = await (await conn.execute(_CHAIN, {"id": response_id, "limit": limit, "owner": owner})).fetchall()
        return [_stored(r) for r in rows]

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.execute("SELECT 1 FROM api_responses LIMIT 0")


def _stored(row: tuple[Any, ...]) -> StoredResponse:
    input_items: list[Mapping[str, Any]] = row[5]
    return StoredResponse(row[0], row[1], row[2], row[3], row[4], input_items, row[6], row[7])
