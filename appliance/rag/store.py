"""The knowledge store on PostgreSQL + pgvector: psycopg 3 async pool, HNSW cosine search,
full-text search, and whole-document replacement in one transaction.

psycopg and pool errors become `DependencyUnavailable` here, and data PostgreSQL refuses
(`DataError`: NUL in text, a number past bigint) `InvalidRequest`; nothing foreign leaves.
The API refuses such values before they get here; this is the backstop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Final

import numpy as np
import psycopg
import psycopg_pool
from pgvector.psycopg import register_vector_async
from prometheus_client import Counter, Gauge
from psycopg.types.json import Jsonb

from appliance.db.guarded import guarded_connection
from appliance.db.token_codec import FORMAT_BITS
from appliance.domain.breaker import Breaker, reporter
from appliance.domain.knowledge import (
    ChunkWrite,
    DocumentInfo,
    DocumentWrite,
    Hit,
    StoredDocument,
    WorkspaceInfo,
)
from appliance.rag.text_query import NO_STATS, LexemeStats, plan, tsquery_literal

log = logging.getLogger(__name__)

_DENSE = """
SELECT document_id, chunk_index, content, metadata, 1 - (embedding <=> %(v)s) AS score
FROM document_chunks WHERE workspace = %(ws)s
ORDER BY embedding <=> %(v)s LIMIT %(k)s
"""
_LEXEMES = "SELECT coalesce(array_agg(lexeme), '{}') FROM unnest(to_tsvector('english', %s))"
_STATS = """
SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs, c.reltuples
FROM pg_class c LEFT JOIN pg_stats s
  ON s.schemaname = current_schema() AND s.tablename = 'document_chunks' AND s.attname = 'tsv'
WHERE c.oid = 'document_chunks'::regclass
"""
STATS_TTL_S: Final = 60.0
TEXT_CAPPED = Counter("appliance_knowledge_text_candidates_capped_total",
                      "Full-text searches whose candidate rows reached APPLIANCE_KNOWLEDGE__TEXT_CANDIDATES")


_TEXT = """
SELECT c.document_id, c.chunk_index, c.content, c.metadata, m.score, m.matched
FROM (SELECT id, score, count(*) OVER () AS matched
      FROM (SELECT id, ts_rank(%(weights)s::float4[],
                               setweight(setweight(setweight(tsv, 'A', %(a)s), 'B', %(b)s), 'C', %(c)s),
                               %(all)s::tsquery) AS score
            FROM document_chunks WHERE workspace = %(ws)s AND tsv @@ %(cand)s::tsquery
            LIMIT %(cap)s) AS candidates
      ORDER BY score DESC, id LIMIT %(k)s) AS m
JOIN document_chunks c ON c.id = m.id
ORDER BY m.score DESC, m.id
"""
"""Candidates from the GIN index (at most `cap`), scored by IDF-weighted ts_rank (see
text_query), the top k joined back to their content; `matched` says whether the cap was hit."""


_UPSERT_DOCUMENT = """
INSERT INTO documents (workspace, document_id, content_hash, metadata, chunk_count, chars)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (workspace, document_id) DO UPDATE SET content_hash = EXCLUDED.content_hash,
  metadata = EXCLUDED.metadata, chunk_count = EXCLUDED.chunk_count, chars = EXCLUDED.chars, updated_at = now()
"""
_COPY_CHUNKS = ("COPY document_chunks (workspace, document_id, chunk_index, content, content_hash, metadata, embedding)"
                " FROM STDIN WITH (FORMAT BINARY)")
_COPY_TOKENS = ("COPY chunk_token_vectors (workspace, document_id, chunk_index, vectors, format)"
                " FROM STDIN WITH (FORMAT BINARY)")


BREAKER_STATE = Gauge("appliance_knowledge_breaker_state",
                      "Knowledge store breaker: 0 closed, 1 open, 2 half-open", ["breaker"], multiprocess_mode="max")


_report = reporter(lambda name, state: BREAKER_STATE.labels(name).set(state), log,
                   opened="PostgreSQL breaker open: retrieval answers without the store until it is back",
                   closed="PostgreSQL breaker closed: the store answers again")


class PgKnowledgeStore:
    """`KnowledgeStore` over a pooled async connection to PostgreSQL."""

    def __init__(self, url: str, *, max_size: int = 10, ef_search: int = 250, text_candidates: int = 1000,
                 connect_timeout_s: float = 2.0, breaker_cooldown_s: float = 5.0,
                 breaker_max_cooldown_s: float = 60.0) -> None:
        self._breaker = Breaker(breaker_cooldown_s, max_cooldown_s=breaker_max_cooldown_s, name="postgres",
                                on_change=_report)
        self._ef_search = ef_search
        self._text_candidates = text_candidates
        self._stats = NO_STATS
        self._stats_at = -STATS_TTL_S
        self._pool = psycopg_pool.AsyncConnectionPool(
            url, min_size=min(2, max_size), max_size=max_size, open=False, timeout=connect_timeout_s,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout_s))},
            configure=self._configure, reconnect_timeout=0,
        )

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await register_vector_async(conn)
        # relaxed_order: pgvector 0.8's iterative scan keeps filtered (per-workspace) HNSW
        # queries from coming back short; results are re-sorted here.
        await conn.execute(f"SET hnsw.ef_search = {int(self._ef_search)}")
        await conn.execute("SET hnsw.iterative_scan = relaxed_order")

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    def _conn(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        return guarded_connection(self._pool, self._breaker)

    async def embedding_dim(self) -> int | None:
        """The dimension the schema was migrated with; None when not migrated."""
        async with self._conn() as conn:
            try:
                row = await (await conn.execute("SELECT value FROM knowledge_meta WHERE key = 'embedding_dim'")).fetchone()
            except psycopg.errors.UndefinedTable:
                return None
        return int(row[0]) if row else None

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.execute("SELECT 1")

    async def document_state(self, workspace: str, document_id: str) -> StoredDocument | None:
        async with self._conn() as conn:
            row = await (await conn.execute(
                "SELECT content_hash, metadata FROM documents WHERE workspace = %s AND document_id = %s",
                (workspace, document_id))).fetchone()
        return StoredDocument(str(row[0]), row[1]) if row else None

    async def document_states(self, workspace: str, document_ids: Sequence[str]) -> dict[str, StoredDocument]:
        async with self._conn() as conn:
            rows = await (await conn.execute(
                "SELECT document_id, content_hash, metadata FROM documents"
                " WHERE workspace = %s AND document_id = ANY(%s)", (workspace, list(document_ids)))).fetchall()
        return {str(r[0]): StoredDocument(str(r[1]), r[2]) for r in rows}

    async def update_metadata(self, workspace: str, document_id: str, metadata: Mapping[str, Any]) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute("UPDATE documents SET metadata = %s, updated_at = now()"
                               " WHERE workspace = %s AND document_id = %s",
                               (Jsonb(dict(metadata)), workspace, document_id))
            await conn.execute("UPDATE document_chunks SET metadata = %s WHERE workspace = %s AND document_id = %s",
                               (Jsonb(dict(metadata)), workspace, document_id))

    async def replace_document(self, workspace: str, document_id: str, content_hash: str,
                               metadata: Mapping[str, Any], chars: int, chunks: Sequence[ChunkWrite]) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO documents (workspace, document_id, content_hash, metadata, chunk_count, chars)"
                " VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (workspace, document_id) DO UPDATE SET content_hash = EXCLUDED.content_hash,"
                " metadata = EXCLUDED.metadata, chunk_count = EXCLUDED.chunk_count, chars = EXCLUDED.chars,"
                " updated_at = now()",
                (workspace, document_id, content_hash, Jsonb(dict(metadata)), len(chunks), chars))
            await conn.execute("DELETE FROM document_chunks WHERE workspace = %s AND document_id = %s",
                               (workspace, document_id))
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO document_chunks (workspace, document_id, chunk_index, content, content_hash,"
                    " metadata, embedding) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [(workspace, document_id, c.index, c.content, c.content_hash, Jsonb(dict(metadata)),
                      np.asarray(c.embedding, dtype=np.float32)) for c in chunks])
                packed = [(workspace, document_id, c.index, c.token_vectors) for c in chunks if c.token_vectors]
                if packed:
                    await cur.executemany("INSERT INTO chunk_token_vectors (workspace, document_id, chunk_index,"
                                          " vectors, format) VALUES (%s, %s, %s, %s, 2)", packed)

    async def replace_documents(self, workspace: str, documents: Sequence[DocumentWrite]) -> None:
        """All in one transaction: the documents upserted, their old chunks deleted, the new
        chunks and token vectors written by binary COPY (a row at a time cost a round trip
        and a statement each)."""
        if not documents:
            return
        async with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(_UPSERT_DOCUMENT, [
                (workspace, d.document_id, d.content_hash, Jsonb(dict(d.metadata)), len(d.chunks), d.chars)
                for d in documents])
            await cur.execute("DELETE FROM document_chunks WHERE workspace = %s AND document_id = ANY(%s)",
                              (workspace, [d.document_id for d in documents]))
            async with cur.copy(_COPY_CHUNKS) as copy:
                copy.set_types(["text", "text", "int4", "text", "text", "jsonb", "vector"])
                for d in documents:
                    meta = Jsonb(dict(d.metadata))
                    for c in d.chunks:
                        await copy.write_row((workspace, d.document_id, c.index, c.content, c.content_hash, meta,
                                              np.asarray(c.embedding, dtype=np.float32)))
            if any(c.token_vectors for d in documents for c in d.chunks):
                async with cur.copy(_COPY_TOKENS) as copy:
                    copy.set_types(["text", "text", "int4", "bytea", "int2"])
                    for d in documents:
                        for c in d.chunks:
                            if c.token_vectors:
                                await copy.write_row((workspace, d.document_id, c.index, c.token_vectors,
                                                      FORMAT_BITS))

    async def delete_document(self, workspace: str, document_id: str) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute("DELETE FROM documents WHERE workspace = %s AND document_id = %s",
                                     (workspace, document_id))
        return cur.rowcount > 0

    async def list_documents(self, workspace: str, limit: int, offset: int) -> list[DocumentInfo]:
        async with self._conn() as conn:
            rows = await (await conn.execute(
                "SELECT document_id, content_hash, chunk_count, chars, metadata, updated_at FROM documents"
                " WHERE workspace = %s ORDER BY document_id LIMIT %s OFFSET %s", (workspace, limit, offset))).fetchall()
        return [DocumentInfo(r[0], r[1], r[2], r[3], r[4], r[5].isoformat()) for r in rows]

    async def list_workspaces(self, limit: int) -> list[WorkspaceInfo]:
        async with self._conn() as conn:
            rows = await (await conn.execute(
                "SELECT workspace, count(*), coalesce(sum(chunk_count), 0), max(updated_at) FROM documents"
                " GROUP BY workspace ORDER BY workspace LIMIT %s", (limit,))).fetchall()
        return [WorkspaceInfo(r[0], r[1], int(r[2]), r[3].isoformat() if r[3] else None) for r in rows]

    async def dense_search(self, workspace: str, vector: Sequence[float], k: int) -> list[Hit]:
        hits = await self._search(_DENSE, {"v": np.asarray(vector, dtype=np.float32), "ws": workspace, "k": k}, "dense")
        return sorted(hits, key=lambda h: -h.scores["dense"])

    async def text_search(self, workspace: str, query: str, k: int) -> list[Hit]:
        async with self._conn() as conn:
            row = await (await conn.execute(_LEXEMES, (query,))).fetchone()
            planned = plan(row[0] if row else [], await self._lexeme_stats(conn), self._text_candidates)
            if planned is None:
                return []
            a, b, c = (list(group) for group in planned.labelled)
            rows = await (await conn.execute(_TEXT, {
                "ws": workspace, "k": k, "cap": self._text_candidates, "weights": list(planned.weights),
                "a": a, "b": b, "c": c, "cand": tsquery_literal(planned.candidates),
                "all": tsquery_literal(planned.lexemes)})).fetchall()
        if rows and rows[0][5] >= self._text_candidates:
            TEXT_CAPPED.inc()
            log.info("full-text candidates capped", extra={"cap": self._text_candidates, "workspace": workspace})
        return [Hit(r[0], r[1], r[2], r[3], {"text": float(r[4])}) for r in rows]

    async def token_vectors(self, workspace: str, chunks: Sequence[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
        if not chunks:
            return {}
        async with self._conn() as conn:
            rows = await (await conn.execute(
                "SELECT t.document_id, t.chunk_index, t.vectors FROM chunk_token_vectors t"
                " JOIN unnest(%s::text[], %s::int[]) AS k(document_id, chunk_index) USING (document_id, chunk_index)"
                " WHERE t.workspace = %s AND t.format = 2",  # format 1 until `appliance migrate` converts it
                ([d for d, _ in chunks], [i for _, i in chunks], workspace), binary=True)).fetchall()
        return {(r[0], r[1]): bytes(r[2]) for r in rows}  # binary: 1.5 MB for 20 chunks, not 3 MB of hex

    async def _lexeme_stats(self, conn: psycopg.AsyncConnection[Any]) -> LexemeStats:
        """ANALYZE's lexeme frequencies, re-read at most once a minute."""
        now = time.monotonic()
        if now - self._stats_at < STATS_TTL_S:
            return self._stats
        row = await (await conn.execute(_STATS)).fetchone()
        stats = NO_STATS
        if row and row[0] and row[1]:
            elems, freqs, rows = row
            stats = LexemeStats(dict(zip(elems, freqs[:len(elems)], strict=True)), float(freqs[len(elems)]),
                                float(rows))
        self._stats, self._stats_at = stats, now
        return stats

    async def _search(self, sql: str, params: dict[str, Any], name: str) -> list[Hit]:
        async with self._conn() as conn:
            rows = await (await conn.execute(sql, params)).fetchall()
        return [Hit(r[0], r[1], r[2], r[3], {name: float(r[4])}) for r in rows]
