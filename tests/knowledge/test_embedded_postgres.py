"""The embedded PostgreSQL runs with settings sized for retrieval, not initdb's defaults."""

from __future__ import annotations

from pathlib import Path

import psycopg

from appliance.embedded.postgres import INCLUDE, EmbeddedPostgres, machine_memory, tuning


def shown(url: str, name: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SHOW {name}").fetchone()
    assert row is not None
    return str(row[0])


def megabytes(value: str) -> int:
    number, unit = int(value[:-2]), value[-2:]
    return number * {"kB": 1, "MB": 1024, "GB": 1024 * 1024}[unit] // 1024


def test_shared_buffers_hold_an_hnsw_index_not_initdbs_128mb(pg_url: str) -> None:
    expected = next(line for line in tuning(machine_memory()).splitlines() if line.startswith("shared_buffers"))

    assert f"shared_buffers = {megabytes(shown(pg_url, 'shared_buffers'))}MB" == expected
    assert megabytes(shown(pg_url, "maintenance_work_mem")) >= 64


def test_a_restarted_server_keeps_the_settings_and_includes_them_once(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    for _ in range(2):
        with EmbeddedPostgres(data) as pg:
            assert megabytes(shown(pg.url, "work_mem")) == 32

    assert (data / "postgresql.conf").read_text().count(INCLUDE) == 1


def test_sizing_follows_memory_within_bounds() -> None:
    gib = 1 << 30

    assert "shared_buffers = 128MB" in tuning(gib // 4)      # a tiny VM keeps initdb's value
    assert "shared_buffers = 512MB" in tuning(2 * gib)       # a quarter of memory
    assert "shared_buffers = 1024MB" in tuning(64 * gib)     # capped, as the production config
