"""One set of in-process models per test session: loading them takes about a second."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.config import KnowledgeSettings
from appliance.inference.local import LocalModels, load_local_models


@pytest.fixture(scope="session")
def local_models() -> Iterator[LocalModels]:
    models = load_local_models(KnowledgeSettings(embed_threads=1))
    try:
        yield models
    finally:
        models.close()
