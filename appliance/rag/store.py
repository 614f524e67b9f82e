"""The knowledge store on PostgreSQL + pgvector: psycopg 3 async pool, HNSW cosine search,
full-text search, and whole-document replacement in one transaction.

psycopg and pool errors become `DependencyUnavailable` here; nothing foreign leaves.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import psycopg
import psycopg_pool
from pgvector.psycopg import register_vector_async
from psycopg.types.json import Jsonb

from appliance.domain.errors import DependencyUnavailable
from appliance.domain.knowledge import ChunkWrite, DocumentInfo, Hit, StoredDocument

log = logging.getLogger(__name__)

_DENSE = """
SELECT document_id, chunk_index, content, metadata, 1 - (embedding <=> %(v)s) AS score
FROM document_chunks WHERE workspace = %(ws)s
ORDER BY embedding <=> %(v)s LIMIT %(k)s
"""
# plainto_tsquery stems and drops stop words; joining its terms with OR (not AND) lets a
# question match passages that contain only some of its words, ranked by ts_rank_cd.
_TEXT = """
SELECT document_id, chunk_index, content, metadata, ts_rank_cd(tsv, query.q) AS score
FROM document_chunks,
     (SELECT replace(plainto_tsquery('english', %(q)s)::text, '&', '|')::tsquery AS q) AS query
WHERE workspace = %(ws)s AND tsv @@ query.q
ORDER BY score DESC LIMIT %(k)s
"""


class PgKnowledgeStore:
    """`KnowledgeStore` over a pooled async connection to PostgreSQL."""

    def __init__(self, url: str, *, max_size: int = 10, ef_search: int = 100, connect_timeout_s: float = 2.0) -> None:
        self._ef_search = ef_search
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

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.InterfaceError) as exc:
            raise DependencyUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}") from exc

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

    async def dense_search(self, workspace: str, vector: Sequence[float], k: int) -> list[Hit]:
        hits = await self._search(_DENSE, {"v": np.asarray(vector, dtype=np.float32), "ws": workspace, "k": k}, "dense")
        return sorted(hits, key=lambda h: -h.scores["dense"])

    async def text_search(self, workspace: str, query: str, k: int) -> list[Hit]:
        return await self._search(_TEXT, {"q": query, "ws": workspace, "k": k}, "text")

    async def _search(self, sql: str, params: dict[str, Any], name: str) -> list[Hit]:
        async with self._conn() as conn:
            rows = await (await conn.execute(sql, params)).fetchall()
        return [Hit(r[0], r[1], r[2], r[3], {name: float(r[4])}) for r in rows]
