"""`appliance usage`: what `GET /admin/usage` answers, read from PostgreSQL and printed as a
table (or as the same JSON with `--json`)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import orjson
import psycopg

from appliance.config import Settings
from appliance.db.usage import read
from appliance.domain.errors import InvalidRequest
from appliance.domain.usage import GROUPS, UsageQuery, parse_query

_NUMBERS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "gpu_seconds", "errors",
            "latency_p50_ms", "latency_p95_ms")


def table(rows: Sequence[dict[str, Any]], group_by: Sequence[str]) -> str:
    """Rows as aligned columns: the grouped ones first, then the numbers (right-aligned)."""
    columns = [g for g in GROUPS if g in group_by] + list(_NUMBERS)

    def cell(column: str, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            # the precision /admin/usage answers with: a few GPU-milliseconds cost a fraction of a cent
            return f"{value:.6f}" if column == "cost_usd" else f"{value:.3f}" if column == "gpu_seconds" else f"{value:.1f}"
        return str(value)

    cells = [[cell(c, r[c]) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    numeric = [c in _NUMBERS for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True))

    return "\n".join([line(columns), *(line(c) for c in cells)]).rstrip() if cells else "no usage recorded"


async def _read(url: str, query: UsageQuery) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return [r.as_json() for r in await read(conn, query)]


def run(settings: Settings, group_by: str | None, since: str | None, until: str | None, as_json: bool = False,
        out: TextIO = sys.stdout) -> int:
    from appliance.embedded.postgres import database_url

    try:
        query = parse_query(group_by, since, until)
    except InvalidRequest as exc:
        print(f"usage: {exc.message}", file=sys.stderr)
        return 2
    url, server = database_url(settings)
    try:
        rows = asyncio.run(_read(url, query))
    except psycopg.errors.UndefinedTable:
        print("usage: the usage tables are missing: run `appliance migrate`", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"usage: PostgreSQL is unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
    print(orjson.dumps({"data": rows}).decode() if as_json else table(rows, query.group_by), file=out)
    return 0
