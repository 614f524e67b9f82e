"""`appliance migrate`: applies what is missing, in order, records it, and is safe to run twice."""

from __future__ import annotations

import subprocess
import sys

import psycopg

from appliance.db.migrate import migrations_dir
from tests import procs


def run_migrate(url: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "appliance", "migrate"], capture_output=True, text=True, timeout=120,
                          env=procs.child_env(APPLIANCE_DATABASE_URL=url))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_every_migration_is_recorded_and_a_second_run_changes_nothing(migrated_pg: str) -> None:
    files = sorted(p.stem for p in migrations_dir().glob("*.sql"))

    with psycopg.connect(migrated_pg) as conn:
        recorded = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]

    assert recorded == files
    assert "migrations: up to date" in run_migrate(migrated_pg)


def test_the_chunk_index_is_the_tuned_cosine_hnsw(migrated_pg: str) -> None:
    with psycopg.connect(migrated_pg) as conn:
        row = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'document_chunks_embedding_hnsw'").fetchone()

    assert row is not None
    assert "USING hnsw (embedding vector_cosine_ops) WITH (m='24', ef_construction='128')" in row[0]
