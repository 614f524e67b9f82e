"""Knowledge: documents in, chunks embedded and stored; dense, full-text and hybrid search
(reciprocal rank fusion) with optional rerank; and the context a RAG chat gets.

Talks to the world only through the `KnowledgeStore`, `Embedder` and `Reranker` ports.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from appliance.domain.errors import InvalidRequest
from appliance.domain.ports import Embedder, Reranker
from appliance.domain.prompts import Prompt, PromptChoice
from appliance.domain.rag import Passage, RetrievedContext
from appliance.domain.records import NullRecorder, Recorder, RetrievalOutcome, RetrievedChunk
from appliance.domain.tracing import NO_TRACER, Tracer

SearchMode = Literal["dense", "text", "hybrid"]
MODES: tuple[SearchMode, ...] = ("dense", "text", "hybrid")
RRF_K = 60  # the usual constant: damps the weight of the very first ranks
_WORKSPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class Hit:
    document_id: str
    chunk_index: int
    content: str
    metadata: Mapping[str, Any]
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChunkWrite:
    index: int
    content: str
    content_hash: str
    embedding: Sequence[float]
    token_vectors: bytes | None = None  # for late-interaction rerank, when kept


@dataclass(frozen=True, slots=True)
class DocumentWrite:
    """A document and all its chunks, as `replace_documents` writes them."""

    document_id: str
    content_hash: str
    metadata: Mapping[str, Any]
    chars: int
    chunks: Sequence[ChunkWrite]


@dataclass(frozen=True, slots=True)
class _Pending:
    document_id: str
    metadata: Mapping[str, Any]
    digest: str
    chars: int
    pieces: list[str]


class LateInteraction(Protocol):
    """MaxSim over per-token vectors that are computed once, at ingest, and stored."""

    async def encode(self, texts: Sequence[str]) -> list[bytes]:
        """Each text's token vectors, packed for storage."""
        ...

    async def embed_and_encode(self, texts: Sequence[str]) -> tuple[Sequence[Sequence[float]], list[bytes]]:
        """Each text's dense embedding and its packed token vectors, from one model pass."""
        ...

    async def prepare(self, query: str) -> Any:
        """The query's side of the score (its token vectors), opaque to the caller."""
        ...

    async def score(self, prepared: Any, documents: Sequence[bytes]) -> list[float]:
        """One score per packed document, in order; higher is more relevant."""
        ...


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    document_id: str
    content_hash: str
    chunk_count: int
    chars: int
    metadata: Mapping[str, Any]
    updated_at: str


@dataclass(frozen=True, slots=True)
class WorkspaceInfo:
    workspace: str
    documents: int
    chunks: int
    updated_at: str | None


@dataclass(frozen=True, slots=True)
class PutResult:
    document_id: str
    status: Literal["created", "updated", "unchanged"]
    chunks: int


@dataclass(frozen=True, slots=True)
class StoredDocument:
    content_hash: str               # of the text alone: equal means the chunks are still right
    metadata: Mapping[str, Any]


class KnowledgeStore(Protocol):
    """Where documents and chunks live. Raises `DependencyUnavailable` when it is down."""

    async def document_state(self, workspace: str, document_id: str) -> StoredDocument | None: ...

    async def document_states(self, workspace: str, document_ids: Sequence[str]) -> dict[str, StoredDocument]:
        """The stored state of those of `document_ids` that exist."""
        ...

    async def update_metadata(self, workspace: str, document_id: str, metadata: Mapping[str, Any]) -> None:
        """Replace the metadata of the document and of its chunks (one transaction)."""
        ...

    async def replace_document(self, workspace: str, document_id: str, content_hash: str,
                               metadata: Mapping[str, Any], chars: int, chunks: Sequence[ChunkWrite]) -> None:
        """Insert or replace the document and all its chunks in one transaction."""
        ...

    async def replace_documents(self, workspace: str, documents: Sequence[DocumentWrite]) -> None:
        """`replace_document` for each of them, all in one transaction."""
        ...

    async def delete_document(self, workspace: str, document_id: str) -> bool: ...

    async def list_documents(self, workspace: str, limit: int, offset: int) -> list[DocumentInfo]: ...

    async def list_workspaces(self, limit: int) -> list[WorkspaceInfo]: ...

    async def dense_search(self, workspace: str, vector: Sequence[float], k: int) -> list[Hit]: ...

    async def text_search(self, workspace: str, query: str, k: int) -> list[Hit]: ...

    async def token_vectors(self, workspace: str, chunks: Sequence[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
        """Stored token vectors of these (document id, chunk index); absent ones are left out."""
        ...


def check_workspace(workspace: str) -> str:
    if not _WORKSPACE.fullmatch(workspace):  # `$` would let a trailing newline through
        raise InvalidRequest("workspace must be 1-64 letters, digits, '.', '_' or '-'", param="workspace")
    return workspace


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(metadata: Mapping[str, Any]) -> str:
    return json.dumps(metadata, sort_keys=True, default=str)


def fuse(ranked_lists: Sequence[Sequence[Hit]], names: Sequence[str], k: int = RRF_K) -> list[Hit]:
    """Reciprocal rank fusion: score = sum of 1 / (k + rank) over the lists a chunk is in.
    Each fused hit keeps the scores it had in every list, plus `rrf`."""
    merged: dict[tuple[str, int], Hit] = {}
    fused: dict[tuple[str, int], float] = {}
    for name, hits in zip(names, ranked_lists, strict=True):
        for rank, hit in enumerate(hits, start=1):
            key = (hit.document_id, hit.chunk_index)
            base = merged.setdefault(key, Hit(hit.document_id, hit.chunk_index, hit.content, hit.metadata, {}))
            base.scores[name] = hit.scores.get(name, 0.0)
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
    for key, score in fused.items():
        merged[key].scores["rrf"] = score
    return sorted(merged.values(), key=lambda h: -h.scores["rrf"])


def _batches(todo: Sequence[_Pending], chunks: int) -> Iterator[list[_Pending]]:
    """Whole documents in groups of at most `chunks` chunks (one larger document alone)."""
    batch: list[_Pending] = []
    size = 0
    for doc in todo:
        if batch and size + len(doc.pieces) > chunks:
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += len(doc.pieces)
    if batch:
        yield batch


def _discard(future: asyncio.Future[Any]) -> None:
    """Cancel a side computation nobody waited for, or mark its error as seen."""
    if not future.done():
        future.cancel()
    elif not future.cancelled():
        future.exception()


def compose(hits: Sequence[Hit], prompt: Prompt | None = None) -> RetrievedContext:
    """A system message with numbered sources, citing each document once, in rank order,
    written with `prompt` (without one: the numbered sources alone)."""
    lines: list[str] = []
    sources: list[str] = []
    passages: list[Passage] = []
    for n, hit in enumerate(hits, start=1):
        lines.append(f"[{n}] ({hit.document_id}) {hit.content.strip()}")
        passages.append(Passage(n, hit.document_id, hit.chunk_index, hit.content, dict(hit.scores)))
        if hit.document_id not in sources:
            sources.append(hit.document_id)
    numbered = "\n".join(lines)
    return RetrievedContext(prompt.render(numbered) if prompt else numbered, tuple(sources), tuple(passages), prompt)


class KnowledgeService:
    """Ingest and retrieval over one store; also the chat's `ContextProvider`."""

    def __init__(self, store: KnowledgeStore, embedder: Embedder, reranker: Reranker | None,
                 chunker: Callable[[str], list[str]], *, candidates: int = 20,
                 recorder: Recorder | None = None, late: LateInteraction | None = None,
                 prompts: PromptChoice | None = None, clock: Callable[[], float] = time.perf_counter,
                 tracer: Tracer = NO_TRACER, ingest_batch_chunks: int = 256) -> None:
        self._tracer = tracer
        self._batch_chunks = ingest_batch_chunks
        self.store = store
        self.prompts = prompts
        self._late = late
        self._embedder = embedder
        self._reranker = reranker
        self._chunker = chunker
        self._candidates = candidates
        self._recorder: Recorder = recorder or NullRecorder()
        self._clock = clock

    async def put_document(self, workspace: str, document_id: str, text: str,
                           metadata: Mapping[str, Any] | None = None) -> PutResult:
        """Idempotent by content hash: unchanged text and metadata write nothing; changed
        metadata alone is updated in place without chunking or embedding again."""
        return (await self.put_documents(workspace, [(document_id, text, metadata or {})]))[0]

    async def put_documents(self, workspace: str,
                            documents: Sequence[tuple[str, str, Mapping[str, Any]]]) -> list[PutResult]:
        """`put_document` for each (id, text, metadata), in order, batched: the chunks of
        several documents go through the model together (one pass gives both the embedding
        and the token vectors) and are written together, one transaction per batch of about
        `ingest_batch_chunks` chunks (a document is never split), the next batch encoded
        while the last one is written. An id seen again starts a new group, so the later
        one sees the earlier, as one at a time would."""
        check_workspace(workspace)
        for document_id, text, _ in documents:
            if not document_id or len(document_id) > 512:
                raise InvalidRequest("document id must be 1-512 characters", param="id")
            if not text.strip():
                raise InvalidRequest("document text is empty", param="text")
        results: list[PutResult] = []
        group: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for document_id, text, metadata in documents:
            if document_id in group:
                results.extend(await self._put_group(workspace, group))
                group = {}
            group[document_id] = (text, metadata)
        if group:
            results.extend(await self._put_group(workspace, group))
        return results

    async def _put_group(self, workspace: str, group: Mapping[str, tuple[str, Mapping[str, Any]]]) -> list[PutResult]:
        states = await self.store.document_states(workspace, list(group))
        results: dict[str, PutResult] = {}
        todo: list[_Pending] = []
        for document_id, (text, metadata) in group.items():
            digest = content_hash(text)
            previous = states.get(document_id)
            if previous is not None and previous.content_hash == digest:
                if _canonical(previous.metadata) == _canonical(metadata):
                    results[document_id] = PutResult(document_id, "unchanged", 0)
                else:
                    await self.store.update_metadata(workspace, document_id, metadata)
                    results[document_id] = PutResult(document_id, "updated", 0)
                continue
            todo.append(_Pending(document_id, metadata, digest, len(text), self._chunker(text)))
            results[document_id] = PutResult(document_id, "created" if previous is None else "updated",
                                             len(todo[-1].pieces))
        writing: asyncio.Future[None] | None = None
        try:
            for batch in _batches(todo, self._batch_chunks):
                vectors, tokens = await self._encode([piece for doc in batch for piece in doc.pieces])
                writes, at = [], 0
                for doc in batch:
                    chunks = [ChunkWrite(i, piece, content_hash(piece), vectors[at + i], tokens[at + i])
                              for i, piece in enumerate(doc.pieces)]
                    at += len(doc.pieces)
                    writes.append(DocumentWrite(doc.document_id, doc.digest, doc.metadata, doc.chars, chunks))
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(self.store.replace_documents(workspace, writes))
            if writing is not None:
                await writing
        finally:
            if writing is not None:
                _discard(writing)
        return [results[document_id] for document_id in group]

    async def _encode(self, pieces: Sequence[str]) -> tuple[Sequence[Sequence[float]], Sequence[bytes | None]]:
        if self._late is not None:
            return await self._late.embed_and_encode(pieces)
        return await self._embedder.embed(pieces), [None] * len(pieces)

    async def delete_document(self, workspace: str, document_id: str) -> bool:
        return await self.store.delete_document(check_workspace(workspace), document_id)

    async def list_documents(self, workspace: str, limit: int = 100, offset: int = 0) -> list[DocumentInfo]:
        return await self.store.list_documents(check_workspace(workspace), limit, offset)

    async def list_workspaces(self, limit: int = 1000) -> list[WorkspaceInfo]:
        return await self.store.list_workspaces(limit)

    async def search(self, workspace: str, query: str, *, top_k: int, mode: SearchMode = "hybrid",
                     rerank: bool = False, correlation_id: str = "", composed: bool = False,
                     prompt: Prompt | None = None) -> list[Hit]:
        check_workspace(workspace)
        if not query.strip():
            raise InvalidRequest("query is empty", param="query")
        if mode not in MODES:
            raise InvalidRequest(f"mode must be one of {list(MODES)}", param="mode")
        started = self._clock()
        pool = max(top_k, self._candidates) if (rerank or mode == "hybrid") else top_k
        # The query's token vectors for rerank are made while the searches run.
        prepared = (asyncio.ensure_future(self._late.prepare(query))
                    if rerank and self._late is not None else None)
        try:
            with self._tracer.span("search", {"appliance.search.mode": mode, "appliance.search.k": pool}) as span:
                hits = await self._retrieve(workspace, query, mode, pool)
                span.set("appliance.search.hits", len(hits))
            if rerank and hits and (self._late is not None or self._reranker is not None):
                head = hits[: self._candidates]
                with self._tracer.span("rerank", {"appliance.rerank.documents": len(head)}):
                    scores = await self._rerank(workspace, query, head, prepared)
                for hit, score in zip(head, scores, strict=True):
                    hit.scores["rerank"] = score
                hits = sorted(head, key=lambda h: -h.scores["rerank"])
        finally:
            if prepared is not None:
                _discard(prepared)
        hits = hits[:top_k]
        self._record(correlation_id, workspace, query, mode, rerank, hits, started, composed, prompt)
        return hits

    async def _retrieve(self, workspace: str, query: str, mode: SearchMode, k: int) -> list[Hit]:
        legs: dict[str, Awaitable[list[Hit]]] = {}
        if mode in ("dense", "hybrid"):
            legs["dense"] = self._dense(workspace, query, k)
        if mode in ("text", "hybrid"):
            legs["text"] = self.store.text_search(workspace, query, k)
        # Full text runs while the query is embedded and HNSW searched (two connections).
        results = await asyncio.gather(*legs.values(), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        lists = [r for r in results if not isinstance(r, BaseException)]
        return fuse(lists, list(legs)) if mode == "hybrid" else lists[0]

    async def _rerank(self, workspace: str, query: str, head: Sequence[Hit],
                      prepared: asyncio.Future[Any] | None) -> list[float]:
        """Stored token vectors when kept (a chunk stored without them is encoded now),
        else the reranker over the texts."""
        if self._late is None or prepared is None:
            assert self._reranker is not None
            by_index = {s.index: s.score for s in await self._reranker.rerank(query, [h.content for h in head])}
            return [by_index[i] for i in range(len(head))]
        keys = [(h.document_id, h.chunk_index) for h in head]
        stored = await self.store.token_vectors(workspace, keys)
        missing = [i for i, key in enumerate(keys) if key not in stored]
        encoded = dict(zip(missing, await self._late.encode([head[i].content for i in missing]), strict=True))
        return await self._late.score(await prepared, [stored[key] if key in stored else encoded[i]
                                                       for i, key in enumerate(keys)])

    async def _dense(self, workspace: str, query: str, k: int) -> list[Hit]:
        with self._tracer.span("embed", {"gen_ai.operation.name": "embeddings",
                                         "gen_ai.request.model": self._embedder.model_id}):
            vector = (await self._embedder.embed([query]))[0]
        return await self.store.dense_search(workspace, vector, k)

    async def context_for(self, workspace: str, query: str, top_k: int, correlation_id: str, *,
                          prompt: str | None = None) -> RetrievedContext:
        """Hybrid search, reranked when a reranker is configured, composed with numbered
        sources in the chosen prompt (`PromptChoice`). A conversation whose last user turn
        has no text retrieves nothing; NUL characters, which PostgreSQL text cannot hold and
        which mean nothing to a search, are left out of the query."""
        chosen = self.prompts.choose(workspace, prompt) if self.prompts else None
        query = query.replace("\x00", " ")
        if not query.strip():
            return compose([], chosen)
        hits = await self.search(workspace, query, top_k=top_k, mode="hybrid", rerank=self._reranker is not None,
                                 correlation_id=correlation_id, composed=True, prompt=chosen)
        return compose(hits, chosen)

    def _record(self, cid: str, workspace: str, query: str, mode: str, reranked: bool, hits: Sequence[Hit],
                started: float, composed: bool, prompt: Prompt | None = None) -> None:
        chunks = [RetrievedChunk(h.document_id, h.chunk_index, h.scores.get("rerank", h.scores.get("rrf",
                                 h.scores.get(mode, 0.0)))) for h in hits]
        self._recorder.retrieval(RetrievalOutcome(
            correlation_id=cid, workspace=workspace, query=query, mode=mode, reranked=reranked, hits=chunks,
            latency_ms=(self._clock() - started) * 1000,
            composed_prompt_chars=len(compose(hits, prompt).system_message) if composed else 0,
            started_at=time.time()))
