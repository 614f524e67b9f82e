"""Composition of knowledge: the store, the chunker on the embedder's tokenizer, and the
service that both the knowledge API and RAG chat use. Nothing here does I/O until start."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from appliance.config import ConfigError, Settings
from appliance.domain.chunking import chunk_text
from appliance.domain.errors import DependencyUnavailable
from appliance.domain.knowledge import KnowledgeService
from appliance.domain.ports import Embedder, Reranker
from appliance.rag.late_interaction import StoredMaxSim
from appliance.rag.store import PgKnowledgeStore

if TYPE_CHECKING:
    from appliance.services import Services

log = logging.getLogger(__name__)


def token_counter(embedder: Embedder) -> Callable[[Sequence[str]], list[int]]:
    """Content tokens per text by the embedder's own tokenizer (what chunk sizes are in)."""
    tokenizer: Any = embedder.tokenizer  # type: ignore[attr-defined]

    def count(texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]
    return count


def chunker_for(settings: Settings, embedder: Embedder) -> Callable[[str], list[str]]:
    cfg = settings.knowledge
    max_len: int = embedder.max_seq_len  # type: ignore[attr-defined]
    size = min(cfg.chunk_tokens, max_len - 2)  # [CLS] and [SEP] take two positions
    return partial(chunk_text, count=token_counter(embedder), size=size, overlap=min(cfg.chunk_overlap, size - 1))


def build_knowledge(settings: Settings, embedder: Embedder, reranker: Reranker | None,
                    recorder: Callable[[], Any] | None = None) -> tuple[KnowledgeService, PgKnowledgeStore]:
    if not settings.database_url:
        raise ConfigError("config error: APPLIANCE_DATABASE_URL: knowledge needs a PostgreSQL URL")
    cfg = settings.knowledge
    store = PgKnowledgeStore(settings.database_url, max_size=cfg.db_pool_max, ef_search=cfg.hnsw_ef_search,
                             text_candidates=cfg.text_candidates)
    late = None
    if cfg.rerank_kind == "maxsim" and cfg.rerank_token_vectors and hasattr(embedder, "token_vectors"):
        late = StoredMaxSim(embedder)  # type: ignore[arg-type]
    service = KnowledgeService(store, embedder, reranker, chunker_for(settings, embedder),
                               candidates=cfg.rag_candidates, recorder=recorder, late=late)
    return service, store


async def check_dimensions(store: PgKnowledgeStore, embedder: Embedder) -> None:
    """The schema's vector dimension must be the model's; a mismatch stops the start."""
    try:
        migrated = await store.embedding_dim()
    except DependencyUnavailable as exc:
        log.warning("knowledge store unreachable at start; retrieval degrades until it answers",
                    extra={"error": exc.message})
        return
    if migrated is None:
        log.warning("knowledge schema not migrated; run `appliance migrate`")
    elif migrated != embedder.dimensions:
        raise ConfigError(f"config error: the database holds {migrated}-dim embeddings but the embedding model "
                          f"{embedder.model_id} makes {embedder.dimensions}; one model per database")


def add_knowledge(services: Services) -> KnowledgeService | None:
    """Knowledge for the gateway when a database is configured; RAG chat uses it too."""
    settings = services.settings
    if not settings.database_url or services.embedder is None:
        return None
    service, store = build_knowledge(settings, services.embedder, services.reranker, lambda: services.recorder)
    embedder = services.embedder

    async def start() -> None:
        await store.open()
        await check_dimensions(store, embedder)

    async def readiness() -> dict[str, Any]:
        await store.ping()
        return {"ok": True}

    services.knowledge = service
    services.chat.context = service
    services.starters.append(start)
    services.closers.append(store.close)
    services.readiness["postgres"] = readiness
    return service
