"""Stored token vectors: the MaxSim the reranker computes, from the compact stored rows."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from appliance.config import KnowledgeSettings, Settings
from appliance.domain.knowledge import KnowledgeService
from appliance.inference.wiring import Inference
from appliance.rag.late_interaction import StoredMaxSim, pack, unpack
from appliance.rag.wiring import knowledge_service, knowledge_store

PASSAGES = ["The heat pump keeps the house warm down to minus fifteen degrees.",
            "Feed the sourdough starter with flour and water every day.",
            "The guest wifi network is called OAKWIFI."]


@pytest.fixture(scope="module")
def inference() -> Iterator[Inference]:
    inf = Inference(Settings(knowledge=KnowledgeSettings(rerank_cache_entries=0)))
    yield inf
    inf.loader.close()


def test_packing_keeps_directions() -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal((7, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    back = unpack(pack(v), 384)
    assert back.shape == (7, 384)
    assert np.all(np.sum(v * back, axis=1) > 0.999)


async def test_stored_scores_match_the_reranker(inference: Inference) -> None:
    late = StoredMaxSim(inference.embedder)
    query = "what is the name of the guest wifi"
    stored = await late.score(await late.prepare(query), await late.encode(PASSAGES))
    live = [s.score for s in await inference.reranker.rerank(query, PASSAGES)]
    # stored compactly (db/token_codec: one sign bit per dimension): the cosines come out
    # lower than the float vectors' (by ~0.8 near the top), in the same order
    assert np.argsort(stored).tolist() == np.argsort(live).tolist()
    assert np.all(np.asarray(stored) <= np.asarray(live) + 0.02)
    assert np.all(np.asarray(stored) >= 0.7 * np.asarray(live))
    assert int(np.argmax(stored)) == 2


async def test_vectors_are_kept_at_ingest_replaced_with_the_document_and_encoded_when_missing(
        inference: Inference, migrated_pg: str, workspace: str) -> None:
    settings = Settings(database_url=migrated_pg)
    store = knowledge_store(settings)
    service = knowledge_service(settings, store, inference.embedder, inference.reranker)
    assert isinstance(service, KnowledgeService)
    await store.open()
    try:
        for i, text in enumerate(PASSAGES):
            await service.put_document(workspace, f"d{i}", text)

        def kept() -> int:
            with psycopg.connect(migrated_pg) as conn:
                row = conn.execute("SELECT count(*) FROM chunk_token_vectors WHERE workspace = %s", (workspace,)).fetchone()
            return int(row[0]) if row else -1
        assert kept() == 3
        before = await service.search(workspace, "guest wifi name", top_k=3, mode="hybrid", rerank=True)
        assert before[0].document_id == "d2"
        with psycopg.connect(migrated_pg) as conn:  # as if ingested before vectors were kept
            conn.execute("DELETE FROM chunk_token_vectors WHERE workspace = %s AND document_id = 'd2'", (workspace,))
        after = await service.search(workspace, "guest wifi name", top_k=3, mode="hybrid", rerank=True)
        assert [h.document_id for h in after] == [h.document_id for h in before]
        assert after[0].scores["rerank"] == pytest.approx(before[0].scores["rerank"], abs=5e-3)
        await service.put_document(workspace, "d0", "The heat pump was replaced by a boiler.")
        await service.delete_document(workspace, "d1")
        assert kept() == 1  # d0's new chunk; d1 went with its chunks, d2's row was deleted above
        assert await service.search(f"{workspace}-empty", "anything", top_k=3, rerank=True) == []
    finally:
        await store.close()
