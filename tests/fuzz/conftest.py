"""One gateway for the fuzz suite, with everything working behind it (the fake LLM, a real
PostgreSQL with a seeded workspace, the embedding and rerank models), so that no 5xx is ever
a legitimate answer: each one is a request the gateway failed to refuse."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import configuration

from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway

SEED_DOCS = [
    {"id": "heat-pump.md", "text": "The heat pump moves warmth from the outdoor air into the house.",
     "metadata": {"room": "utility"}},
    {"id": "router.md", "text": "The router's admin page is at 192.168.1.1; the guest network is OAKWIFI."},
]


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis caches unicode tables and the constants of our modules in `.hypothesis/` under
    the cwd even with no example database, the constants already while tests are collected:
    send them to a temp dir of this run's own, never into the working tree."""
    home = tempfile.mkdtemp(prefix="appliance-hypothesis-")
    configuration.set_hypothesis_home_dir(home)
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))


@pytest.fixture(scope="session")
def fuzz_gateway(fake_llm: FakeLLM, migrated_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("fuzz-gateway"), catalog_for(fake_llm.port),
                       APPLIANCE_DATABASE_URL=migrated_pg, APPLIANCE_MODELS_CACHE_TTL_S="60")
    try:
        with httpx.Client(base_url=gw.url, timeout=60) as http:
            assert http.post("/v1/knowledge/fuzz/documents", json=SEED_DOCS).status_code in (200, 201)
        yield gw
    finally:
        procs.stop(gw.proc)


@pytest.fixture(scope="session")
def http(fuzz_gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_gateway.url, timeout=60) as client:
        yield client
