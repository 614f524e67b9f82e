"""Shared fixtures: a real fake-LLM process, embedded PostgreSQL + pgvector, embedded NATS.

Every fixture binds free ports and uses temporary directories, so parallel runs never collide.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import procs


def pytest_configure(config: pytest.Config) -> None:
    """Each run gets its own base temp directory, not the shared /tmp/pytest-of-<user>: a
    concurrent pytest run resets that one to mode 0700, and the embedded PostgreSQL (which
    runs as its own `pgserver` user when we are root) then cannot reach its data directory."""
    if not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="appliance-tests-")
        config.add_cleanup(lambda: shutil.rmtree(config.option.basetemp, ignore_errors=True))


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

    def stats(self) -> dict[str, int]:
        return dict(self._call("GET", "/_stats"))

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
def llm(fake_llm: FakeLLM) -> Iterator[FakeLLM]:
    """The session's fake LLM, with knobs and recorded requests reset for this test, and its
    knobs reset after it: a 429 left set would trip another gateway's breaker later on."""
    fake_llm.reset()
    yield fake_llm
    fake_llm.control()


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


EMBEDDING_DIM = 384  # all-MiniLM-L6-v2, the default model


@pytest.fixture(scope="session")
def migrated_pg(pg_url: str) -> str:
    """The session's PostgreSQL with every migration applied."""
    from appliance.db.migrate import migrate

    migrate(pg_url, {"embedding_dim": EMBEDDING_DIM})
    return pg_url


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


class Gateway:
    """A running `appliance serve` process."""

    def __init__(self, proc: Any, port: int, log: Path, state_dir: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.state_dir = state_dir
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out


# A cloud-kind backend on the fake LLM (`cloud-*`): what a strict OpenAI API is sent. Add it
# to `catalog_for(..., extra=)` with `.format(port=...)`.
CLOUD_BACKEND = """
[[backends]]
name = "cloud"
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
discover = false

[[routes]]
pattern = "cloud-*"
backend = "cloud"
"""


def catalog_for(llm_port: int, dead_port: int | None = None, extra: str = "") -> str:
    """A catalog routing to the fake LLM, with an alias, a rename and (optionally) a dead backend."""
    text = f"""
[[backends]]
name = "local-vllm"
kind = "vllm"
base_url = "http://127.0.0.1:{llm_port}/v1"

[[routes]]
pattern = "qwen3-*"
backend = "local-vllm"

[[models]]
id = "coder"
backend = "local-vllm"
upstream_id = "fake-model"
price_input_per_mtok = 1.0
price_output_per_mtok = 2.0

[[models]]
id = "fake-model"
backend = "local-vllm"

[[backends]]
name = "slow"
kind = "lmstudio"
base_url = "http://127.0.0.1:{llm_port}/v1"
timeout_s = 1
discover = false

[[routes]]
pattern = "slow-*"
backend = "slow"
"""
    if dead_port:
        text += f"""
[[backends]]
name = "dead"
kind = "llamacpp"
base_url = "http://127.0.0.1:{dead_port}/v1"
timeout_s = 2

[[routes]]
pattern = "dead-*"
backend = "dead"
"""
    return text + extra


def start_gateway(tmp: Path, catalog: str, *, workers: int = 1, timeout: float = 30.0, **env: str) -> Gateway:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "catalog.toml").write_text(catalog)
    port = procs.free_port()
    log = tmp / "gateway.log"
    proc = procs.spawn(["-m", "appliance", "serve", "--port", str(port), "--workers", str(workers),
                        "--config", str(tmp / "catalog.toml")], port, log=log, timeout=timeout,
                       env=procs.child_env(APPLIANCE_STATE_DIR=str(tmp / "state"), **env))
    return Gateway(proc, port, log, tmp / "state")


@pytest.fixture(scope="session")
def gateway(fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway routing to the session's fake LLM (and to a dead backend for `dead-*`)."""
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), catalog_for(fake_llm.port, procs.free_port()),
                       APPLIANCE_MAX_BODY_BYTES="65536", APPLIANCE_MODELS_CACHE_TTL_S="0.5")
    try:
        yield gw
    finally:
        procs.stop(gw.proc)
