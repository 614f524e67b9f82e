from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import procs
from tests.conftest import (
    EMBEDDING_DIM,  # noqa: F401 - re-exported for the tests here
    FakeLLM,
    Gateway,
    catalog_for,
    start_gateway,
)


@pytest.fixture(scope="session")
def rag_gateway(fake_llm: FakeLLM, migrated_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with knowledge on the session's PostgreSQL."""
    gw = start_gateway(tmp_path_factory.mktemp("rag-gateway"), catalog_for(fake_llm.port),
                       APPLIANCE_DATABASE_URL=migrated_pg)
    try:
        yield gw
    finally:
        procs.stop(gw.proc)


@pytest.fixture
def workspace(request: pytest.FixtureRequest) -> str:
    """A workspace of this test's own, so tests sharing the database never see each other."""
    return "t-" + request.node.name.replace("[", "-").replace("]", "")[:50]


def write_docs(root: Path, docs: dict[str, str]) -> Path:
    for name, text in docs.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root
