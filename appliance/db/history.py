"""Retention for what the event pipeline and the Responses API keep in PostgreSQL: rows past
their days deleted by the persister, beside the usage tables' own retention (`db.usage.prune`).

The event tables (sql/0100) grow by a row or more per request, for ever unless pruned; the
stored Responses (sql/0210) by one per `store: true` call (OpenAI keeps its own 30 days).
A retention of 0 days keeps everything.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg
from psycopg import sql

# table -> its time column (each indexed: sql/0100, 0101, 0130, 0210)
EVENT_TABLES: Final = {"chat_history": "ts", "chat_pairs": "ts", "tool_calls": "ts", "flow_lineage": "ts",
                       "retrievals": "ts", "embedding_calls": "ts", "dead_letters": "ts"}
RESPONSES: Final = {"api_responses": "created_at"}


async def delete_older(conn: psycopg.AsyncConnection[Any], table: str, column: str, days: int) -> int:
    """Delete `table`'s rows whose `column` is more than `days` old; how many went."""
    cur = await conn.execute(sql.SQL("DELETE FROM {} WHERE {} < now() - make_interval(days => %s)").format(
        sql.Identifier(table), sql.Identifier(column)), (days,))
    return cur.rowcount


async def prune(conn: psycopg.AsyncConnection[Any], history_days: int, responses_days: int) -> dict[str, int]:
    """Delete rows older than their retention; the rows deleted per table (only those with any)."""
    plan = [(table, column, history_days) for table, column in EVENT_TABLES.items()]
    plan += [(table, column, responses_days) for table, column in RESPONSES.items()]
    deleted: dict[str, int] = {}
    for table, column, days in plan:
        if days <= 0:
            continue
        n = await delete_older(conn, table, column, days)
        if n:
            deleted[table] = n
    return deleted
