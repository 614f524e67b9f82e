from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import procs


class PersisterProc:
    def __init__(self, nats_url: str, db_url: str, log: Path, **env: str) -> None:
        self.port = procs.free_port()
        self.log = log
        self.env = procs.child_env(APPLIANCE_NATS_URL=nats_url, APPLIANCE_DATABASE_URL=db_url,
                                   APPLIANCE_EVENTS__PERSISTER_LISTEN=f"127.0.0.1:{self.port}", **env)
        self.proc: Any = None

    def start(self) -> PersisterProc:
        self.proc = procs.spawn(["-m", "appliance", "persist"], self.port, env=self.env, log=self.log, timeout=60)
        return self

    def status(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as err:
            return dict(json.loads(err.read()))

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)


@pytest.fixture
def persister(migrated_pg: str, tmp_path: Path) -> Iterator[Callable[..., PersisterProc]]:
    started: list[PersisterProc] = []

    def make(nats_url: str, **env: str) -> PersisterProc:
        p = PersisterProc(nats_url, migrated_pg, tmp_path / f"persister-{len(started)}.log", **env)
        started.append(p)
        return p
    yield make
    for p in started:
        p.stop()


def count(db_url: str, sql: str, *args: Any) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(sql, args).fetchone()
    return int(row[0]) if row else 0


def wait_count(db_url: str, sql: str, expected: int, *args: Any, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        n = count(db_url, sql, *args)
        if n >= expected:
            return n
        time.sleep(0.2)
    return n
