"""Shared fixtures: a real fake-LLM process, embedded PostgreSQL + pgvector, embedded NATS.

Every fixture binds free ports and uses temporary directories, so parallel runs never collide.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import procs


class FakeLLM:
    """Handle on a running `tests.fake_llm` process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def control(self, **knobs: Any) -> None:
        self._call("POST", "/_control", knobs)

    def requests(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_requests"))

    def reset(self) -> None:
        self._call("DELETE", "/_requests")
        self.control()


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    proc, port = procs.start_fake_llm(models="fake-model,qwen3-8b,discovered-only")
    try:
        yield FakeLLM(port)
    finally:
        procs.stop(proc)


@pytest.fixture
def llm(fake_llm: FakeLLM) -> FakeLLM:
    """The session's fake LLM, with knobs and recorded requests reset for this test."""
    fake_llm.reset()
    return fake_llm


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 18 with pgvector, in a temporary data directory."""
    from appliance.embedded.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", delete_on_stop=True)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[Any]:
    """A real NATS server with JetStream on a free port, store in this test's tmp dir."""
    from appliance.embedded.nats import EmbeddedNats

    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()
