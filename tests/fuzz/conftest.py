"""One gateway for the fuzz suite, with everything working behind it (the fake LLM, a real
PostgreSQL with a seeded workspace, the embedding and rerank models), so that no 5xx is ever
a legitimate answer: each one is a request the gateway failed to refuse."""

from __future__ import annotations

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


@pytest.fixture(scope="session", autouse=True)
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hypothesis caches unicode tables and constants in `.hypothesis/` under the cwd even with
    no example database: send them to this run's temp dir, never into the working tree."""
    configuration.set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))


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
