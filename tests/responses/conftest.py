from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway


@pytest.fixture(scope="session")
def stored_gateway(fake_llm: FakeLLM, migrated_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway storing responses in the session's PostgreSQL."""
    gw = start_gateway(tmp_path_factory.mktemp("responses-gateway"), catalog_for(fake_llm.port),
                       APPLIANCE_DATABASE_URL=migrated_pg)
    try:
        yield gw
    finally:
        procs.stop(gw.proc)
