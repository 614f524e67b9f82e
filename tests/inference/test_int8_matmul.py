"""`embed_int8`: the embedder's 8-bit copy is derived once, kept, close to the packaged model
in what it returns, and its absence never stops embeddings (inference/int8_matmul.py)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance.config import KnowledgeSettings, Settings
from appliance.inference.int8_matmul import cached_path, int8_copy
from appliance.inference.local import LocalModels, load_local_models
from appliance.inference.model_files import default_model_path

TEXTS = ["How do I list the files in a directory sorted by size?",
         "PostgreSQL keeps an HNSW index of the chunks' embeddings for cosine search.",
         "Der Gateway leitet Anfragen an das Modell weiter, das bereits geladen ist.",
         "ls - list directory contents " * 30]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def int8_models(models_dir: Path) -> Iterator[LocalModels]:
    models = load_local_models(KnowledgeSettings(embed_int8=True, embed_threads=1), models_dir)
    try:
        yield models
    finally:
        models.close()


def test_the_copy_runs_integer_products_and_is_kept(int8_models: LocalModels, models_dir: Path) -> None:
    path = int8_models.embedder.encoder.session.path
    assert path == cached_path(default_model_path(), models_dir) and path.parent == models_dir
    graph = path.read_bytes()
    assert b"MatMulInteger" in graph and b"DynamicQuantizeLinear" in graph
    before = path.stat().st_mtime_ns
    assert int8_copy(default_model_path(), models_dir) == path   # found, not derived again
    assert path.stat().st_mtime_ns == before
    assert [p.name for p in models_dir.iterdir()] == [path.name]  # no temporary files left


async def test_vectors_stay_close_to_the_packaged_model(int8_models: LocalModels, local_models: LocalModels) -> None:
    quick = np.asarray(await int8_models.embedder.embed(TEXTS))
    exact = np.asarray(await local_models.embedder.embed(TEXTS))
    cosines = (quick * exact).sum(axis=1)
    assert cosines.min() > 0.97, cosines
    # what retrieval needs: each text is still nearest to itself
    assert list((quick @ exact.T).argmax(axis=1)) == list(range(len(TEXTS)))
    assert int8_models.embedder.model_id == local_models.embedder.model_id
    tokens = await int8_models.embedder.token_vectors(TEXTS[:1])
    reference = await local_models.embedder.token_vectors(TEXTS[:1])
    assert tokens[0].shape == reference[0].shape
    assert float((tokens[0] * reference[0]).sum(axis=1).mean()) > 0.95


def test_without_onnx_the_packaged_model_is_used_with_one_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)  # its import fails, as without onnx
    with caplog.at_level(logging.WARNING, logger="appliance.inference"):
        models = load_local_models(KnowledgeSettings(embed_int8=True, embed_threads=1), tmp_path)
    try:
        assert models.embedder.encoder.session.path == default_model_path()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "embed_int8" in warnings[0] and "onnx package" in warnings[0]
        assert list(tmp_path.iterdir()) == []
    finally:
        models.close()


def test_derived_models_live_under_the_state_dir(tmp_path: Path) -> None:
    assert Settings(state_dir=tmp_path).models_dir == tmp_path / "models"
    other = tmp_path / "elsewhere"
    assert Settings(state_dir=tmp_path, knowledge=KnowledgeSettings(model_cache_dir=other)).models_dir == other


def test_a_copy_that_does_not_run_gives_way_to_the_packaged_model(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cached_path(default_model_path(), tmp_path).write_bytes(b"a truncated copy")
    with caplog.at_level(logging.WARNING, logger="appliance.inference"):
        models = load_local_models(KnowledgeSettings(embed_int8=True, embed_threads=1), tmp_path)
    try:
        assert models.embedder.encoder.session.path == default_model_path()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "embed_int8" in warnings[0]
    finally:
        models.close()
