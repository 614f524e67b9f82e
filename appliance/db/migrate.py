"""Apply the numbered plain-SQL migrations in sql/ that are missing, in order, once each.

A migration file may use `{{name}}` placeholders (e.g. `{{embedding_dim}}`), filled from
`params`. Applied versions are recorded in `schema_migrations`; an advisory lock makes two
concurrent runs safe. Data steps that SQL cannot do well run after the files, under the same
lock, and are idempotent: `token_codec.convert` (0004's token-vector conversion).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import psycopg

from appliance.db import token_codec

_LOCK_ID = 0x61707031  # "app1"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations_dir() -> Path:
    """sql/ in a checkout, or the copy packaged inside `appliance/sql`."""
    explicit = os.environ.get("APPLIANCE_SQL_DIR")
    if explicit:
        return Path(explicit)
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "sql", here.parents[1] / "sql"):
        if candidate.is_dir() and any(candidate.glob("*.sql")):
            return candidate
    raise FileNotFoundError("no sql/ migrations directory found")


def pending(conn: psycopg.Connection, directory: Path | None = None) -> list[Path]:
    directory = directory or migrations_dir()
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    files = sorted(p for p in directory.glob("*.sql") if _NAME.match(p.name))
    return [p for p in files if p.stem not in applied]


def render(sql: str, params: Mapping[str, object]) -> str:
    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in params:
            raise KeyError(f"migration needs parameter {key!r}")
        return str(params[key])

    return re.sub(r"\{\{\s*([a-z_]+)\s*\}\}", sub, sql)


def migrate(url: str, params: Mapping[str, object] | None = None, directory: Path | None = None) -> list[str]:
    """Apply what is missing; returns the versions applied now (empty when up to date)."""
    done: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            for path in pending(conn, directory):
                with conn.transaction():
                    conn.execute(render(path.read_text(encoding="utf-8"), params or {}).encode())
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,))
                done.append(path.stem)
            token_codec.convert(conn)  # 0004's data step: a no-op once every row is format 2
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return done
