"""Batched ingest (`put_documents`: one model pass, COPY, batches across documents) and the
compact token vectors (format 2, at most 8 kB a chunk), with the migration that converts
int8 rows."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from appliance.config import KnowledgeSettings, Settings
from appliance.db import token_codec
from appliance.db.migrate import migrate
from appliance.inference.maxsim import maxsim
from appliance.inference.wiring import Inference
from appliance.rag.late_interaction import pack
from appliance.rag.wiring import knowledge_service, knowledge_store
from tests.conftest import EMBEDDING_DIM

TEXT = ("The heat pump keeps the house warm down to minus fifteen degrees. " * 12
        + "\n\n## Wifi\n\nThe guest wifi network is called OAKWIFI and its password is on the fridge. " * 10)


@pytest.fixture(scope="module")
def inference() -> Iterator[Inference]:
    inf = Inference(Settings(knowledge=KnowledgeSettings(rerank_cache_entries=0)))
    yield inf
    inf.loader.close()


def _rows(url: str, workspace: str) -> list[tuple[str, int, int, int]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            "SELECT c.document_id, c.chunk_index, t.format, length(t.vectors) FROM document_chunks c"
            " JOIN chunk_token_vectors t USING (workspace, document_id, chunk_index)"
            " WHERE c.workspace = %s ORDER BY 1, 2", (workspace,))]


async def test_a_batch_of_documents_is_written_as_one_at_a_time_would(
        inference: Inference, migrated_pg: str, workspace: str) -> None:
    settings = Settings(database_url=migrated_pg, knowledge=KnowledgeSettings(ingest_batch_chunks=3))
    store = knowledge_store(settings)
    service = knowledge_service(settings, store, inference.embedder, inference.reranker)
    await store.open()
    try:
        docs = [("a", TEXT, {}), ("b", "Feed the sourdough starter every day.", {"k": 1}),
                ("a", TEXT + " Changed.", {}), ("c", "Bread wants a hot oven.", {})]
        results = await service.put_documents(workspace, docs)
        assert [(r.document_id, r.status) for r in results] == [
            ("a", "created"), ("b", "created"), ("a", "updated"), ("c", "created")]
        single = [service._chunker(t) for _, t, _ in docs]
        assert [r.chunks for r in results] == [len(p) for p in single]
        rows = _rows(migrated_pg, workspace)
        assert len(rows) == len(single[2]) + 2  # a's second version, b and c: every chunk has its vectors
        assert all(fmt == token_codec.FORMAT_BITS and size <= token_codec.MAX_BYTES for _, _, fmt, size in rows)
        again = await service.put_documents(workspace, [("b", docs[1][1], {"k": 2}), ("c", docs[3][1], {})])
        assert [r.status for r in again] == ["updated", "unchanged"]
        hits = await service.search(workspace, "what is the guest wifi called", top_k=3, rerank=True)
        assert hits[0].document_id == "a" and "OAKWIFI" in hits[0].content
    finally:
        await store.close()


async def test_one_pass_gives_the_embedding_and_the_token_vectors_of_two(inference: Inference) -> None:
    texts = ["The guest wifi network is called OAKWIFI.", "Feed the sourdough starter with flour and water."]
    pooled, tokens = await inference.embedder.embed_with_tokens(texts)
    assert np.allclose(pooled, np.asarray(await inference.embedder.embed(texts)), atol=1e-4)
    for mine, theirs in zip(tokens, await inference.embedder.token_vectors(texts), strict=True):
        assert mine.shape == theirs.shape and np.allclose(mine, theirs, atol=1e-4)


async def test_compact_vectors_fit_in_8_kb_and_keep_the_maxsim_order(inference: Inference) -> None:
    query = (await inference.embedder.token_vectors(["which network is for guests"]))[0]
    docs = await inference.embedder.token_vectors([TEXT[:900], TEXT[-900:], "Bread wants a hot oven. " * 30])
    assert max(len(d) for d in docs) >= 180
    full = [maxsim(query, d) for d in docs]
    small = [token_codec.compact(d) for d in docs]
    assert max(map(len, small)) <= token_codec.MAX_BYTES
    approx = [maxsim(query, token_codec.expand_compact(b)) for b in small]
    assert np.argsort(approx).tolist() == np.argsort(full).tolist()
    assert np.allclose(approx, full, atol=0.15)  # one bit per dimension: the cosines come out lower, in order
    random = np.random.default_rng(0).standard_normal((256, 384)).astype(np.float32)  # nothing to merge
    random /= np.linalg.norm(random, axis=1, keepdims=True)
    assert len(token_codec.compact(random)) <= token_codec.MAX_BYTES


async def test_migrate_converts_int8_rows_to_the_compact_format(
        inference: Inference, migrated_pg: str, workspace: str) -> None:
    settings = Settings(database_url=migrated_pg)
    store = knowledge_store(settings)
    service = knowledge_service(settings, store, inference.embedder, inference.reranker)
    await store.open()
    try:
        await service.put_document(workspace, "d", TEXT)
        tokens = await inference.embedder.token_vectors(service._chunker(TEXT))
        with psycopg.connect(migrated_pg) as conn:  # as 0002's code wrote them, before 0004
            for i, t in enumerate(tokens):
                conn.execute("UPDATE chunk_token_vectors SET vectors = %s, format = 1"
                             " WHERE workspace = %s AND document_id = 'd' AND chunk_index = %s", (pack(t), workspace, i))
        assert {fmt for _, _, fmt, _ in _rows(migrated_pg, workspace)} == {token_codec.FORMAT_INT8}
        migrate(migrated_pg, {"embedding_dim": EMBEDDING_DIM})
        rows = _rows(migrated_pg, workspace)
        assert {fmt for _, _, fmt, _ in rows} == {token_codec.FORMAT_BITS}
        assert all(size <= token_codec.MAX_BYTES for _, _, _, size in rows)
        hits = await service.search(workspace, "guest wifi name", top_k=1, rerank=True)
        assert "OAKWIFI" in hits[0].content
    finally:
        await store.close()
