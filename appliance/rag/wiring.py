"""Composition of knowledge: the store, the chunker on the embedder's tokenizer, and the
service that both the knowledge API and RAG chat use. Nothing here does I/O until start."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from appliance.config import ConfigError, Settings
from appliance.domain.chunking import chunk_text
from appliance.domain.errors import DependencyUnavailable
from appliance.domain.knowledge import KnowledgeService
from appliance.domain.ports import Reranker
from appliance.domain.prompts import PromptChoice, UnknownPrompt
from appliance.domain.records import Recorder
from appliance.domain.tracing import NO_TRACER, Tracer
from appliance.feature import Feature
from appliance.inference.embedder import TokenEmbedder
from appliance.prompts import load_prompts
from appliance.rag.late_interaction import StoredMaxSim
from appliance.rag.store import PgKnowledgeStore

log = logging.getLogger(__name__)


def token_counter(embedder: TokenEmbedder) -> Callable[[Sequence[str]], list[int]]:
    """Content tokens per text by the embedder's own tokenizer (what chunk sizes are in)."""
    tokenizer = embedder.tokenizer

    def count(texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]
    return count


def chunker_for(settings: Settings, embedder: TokenEmbedder) -> Callable[[str], list[str]]:
    cfg = settings.knowledge
    size = min(cfg.chunk_tokens, embedder.max_seq_len - 2)  # [CLS] and [SEP] take two positions
    return partial(chunk_text, count=token_counter(embedder), size=size, overlap=min(cfg.chunk_overlap, size - 1))


def knowledge_store(settings: Settings) -> PgKnowledgeStore:
    if not settings.database_url:
        raise ConfigError("config error: APPLIANCE_DATABASE_URL: knowledge needs a PostgreSQL URL")
    cfg = settings.knowledge
    return PgKnowledgeStore(settings.database_url, max_size=cfg.db_pool_max, ef_search=cfg.hnsw_ef_search,
                            text_candidates=cfg.text_candidates, breaker_cooldown_s=cfg.db_breaker_cooldown_s,
                            breaker_max_cooldown_s=cfg.db_breaker_max_cooldown_s)


def prompt_choice(settings: Settings) -> PromptChoice:
    """The RAG prompts and which one each workspace gets; a reference to none stops the start."""
    cfg = settings.knowledge
    try:
        return PromptChoice(load_prompts(cfg.prompts_dir), cfg.rag_prompt, cfg.workspace_prompts)
    except (UnknownPrompt, ValueError, OSError) as exc:
        raise ConfigError(f"config error: knowledge.rag_prompt / workspace_prompts / prompts_dir: {exc}") from exc


def knowledge_service(settings: Settings, store: PgKnowledgeStore, embedder: TokenEmbedder,
                      reranker: Reranker | None, recorder: Recorder | None = None,
                      tracer: Tracer = NO_TRACER) -> KnowledgeService:
    cfg = settings.knowledge
    late = StoredMaxSim(embedder) if cfg.rerank_kind == "maxsim" and cfg.rerank_token_vectors else None
    return KnowledgeService(store, embedder, reranker, chunker_for(settings, embedder),
                            candidates=cfg.rag_candidates, recorder=recorder, late=late,
                            prompts=prompt_choice(settings), tracer=tracer,
                            ingest_batch_chunks=cfg.ingest_batch_chunks)


async def check_dimensions(store: PgKnowledgeStore, embedder: TokenEmbedder) -> None:
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


@dataclass(frozen=True, slots=True)
class Knowledge:
    service: KnowledgeService
    feature: Feature


def build_knowledge(settings: Settings, embedder: TokenEmbedder, reranker: Reranker,
                    recorder: Recorder, tracer: Tracer = NO_TRACER) -> Knowledge | None:
    """Knowledge for the gateway when a database is configured (RAG chat uses it too)."""
    if not settings.database_url:
        return None
    store = knowledge_store(settings)
    service = knowledge_service(settings, store, embedder, reranker, recorder, tracer)

    async def start() -> None:
        await store.open()
        await check_dimensions(store, embedder)

    async def readiness() -> dict[str, Any]:
        await store.ping()
        return {"ok": True}

    return Knowledge(service, Feature("knowledge", start=start, close=store.close, readiness={"postgres": readiness}))
