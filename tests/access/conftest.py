"""Fixtures for access: a database of its own (keys in it make every gateway on it ask for
keys, so the session's shared one stays keyless), two gateways on it, and the real CLI."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from appliance.cli import main as cli_main
from tests import procs
from tests.conftest import EMBEDDING_DIM, FakeLLM, Gateway, catalog_for, start_gateway

FAST_SYNC = {"APPLIANCE_ACCESS__SYNC_S": "0.1", "APPLIANCE_ACCESS__KEYS_POLL_S": "0.5"}


@pytest.fixture(scope="session")
def access_db(pg_url: str) -> str:
    from appliance.db.migrate import migrate

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE access_tests")
    url = make_conninfo(pg_url, dbname="access_tests")
    migrate(url, {"embedding_dim": EMBEDDING_DIM})
    return url


def _gateway(tmp: Path, llm: FakeLLM, db: str, workers: int) -> Gateway:
    return start_gateway(tmp, catalog_for(llm.port), workers=workers, APPLIANCE_DATABASE_URL=db, **FAST_SYNC)


@pytest.fixture(scope="module")
def gw(fake_llm: FakeLLM, access_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Two workers on the access database."""
    g = _gateway(tmp_path_factory.mktemp("gw-a"), fake_llm, access_db, workers=2)
    try:
        yield g
    finally:
        procs.stop(g.proc)


@pytest.fixture(scope="module")
def gw_b(fake_llm: FakeLLM, access_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A second gateway (a replica) on the same database."""
    g = _gateway(tmp_path_factory.mktemp("gw-b"), fake_llm, access_db, workers=1)
    try:
        yield g
    finally:
        procs.stop(g.proc)


Keys = Callable[..., list[str]]


@pytest.fixture
def keys(access_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Keys:
    """`appliance keys ...` (the real command line, in process); its output's lines."""
    monkeypatch.setenv("APPLIANCE_DATABASE_URL", access_db)

    def run(*args: str, code: int = 0) -> list[str]:
        capsys.readouterr()
        assert cli_main(["keys", *args]) == code
        return capsys.readouterr().out.splitlines()
    return run


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_key(keys: Keys, *args: str) -> tuple[str, str]:
    name = unique(args[0] if args and not args[0].startswith("-") else "k")
    rest = args[1:] if args and not args[0].startswith("-") else args
    return name, keys("create", name, *rest)[-1]


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def ready(gw: Gateway, secret: str) -> None:
    """A new key taken up by every worker (the keys poll, 0.5 s here), checked with one request."""
    time.sleep(0.8)
    assert httpx.get(f"{gw.base_url}/models", headers=auth(secret)).status_code == 200


def wait_status(gw: Gateway, secret: str, status: int, timeout: float = 5.0) -> float:
    """Seconds until `GET /v1/models` with `secret` answers `status` (the keys poll's delay)."""
    start = time.monotonic()
    while True:
        got = httpx.get(f"{gw.base_url}/models", headers=auth(secret)).status_code
        if got == status:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"still {got}, not {status}, after {timeout}s")
        time.sleep(0.05)
