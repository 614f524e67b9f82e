"""Embedding and rerank requests as domain calls: validate against the model, call the port,
record the outcome. Which path served (gRPC or in process) comes from an injected probe,
since the domain knows nothing of gRPC."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.domain.errors import InvalidRequest
from appliance.domain.ports import Embedder, Reranker, RerankScore
from appliance.domain.records import EmbeddingOutcome, Recorder


@dataclass(frozen=True, slots=True)
class Embedded:
    vectors: list[list[float]]
    tokens: int
    model: str
    path: str                       # "grpc" | "local"


class EmbeddingService:
    def __init__(self, embedder: Embedder, reranker: Reranker, recorder: Recorder,
                 served_by: Callable[[], str | None] = lambda: None) -> None:
        self.embedder = embedder
        self.reranker = reranker
        self._recorder = recorder
        self._served_by = served_by

    async def embed(self, texts: Sequence[str], *, correlation_id: str, dimensions: int | None = None,
                    key: str | None = None) -> Embedded:
        if dimensions is not None and dimensions != self.embedder.dimensions:
            raise InvalidRequest(f"Model {self.embedder.model_id} produces {self.embedder.dimensions} dimensions; "
                                 f"{dimensions} were requested", param="dimensions")
        started_at = time.time()
        start = time.perf_counter()
        tokens = await self.embedder.count_tokens(texts)
        vectors = await self.embedder.embed(texts)
        path = self._served_by() or "local"
        self._recorder.embedding(EmbeddingOutcome(
            correlation_id=correlation_id, model=self.embedder.model_id, inputs=len(texts), tokens=tokens,
            dimensions=self.embedder.dimensions, latency_ms=(time.perf_counter() - start) * 1000,
            path=path, started_at=started_at, key=key))
        return Embedded(vectors, tokens, self.embedder.model_id, path)

    async def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RerankScore]:
        """Scores best first (ties keep input order), at most `top_n`."""
        scores = await self.reranker.rerank(query, documents)
        ranked = sorted(scores, key=lambda s: (-s.score, s.index))
        return ranked[:top_n] if top_n else ranked

    def served_by(self) -> str:
        return self._served_by() or "local"
