"""Late-interaction MaxSim: score = mean over query tokens of the best cosine to any
document token. The default reranker, over the embedder's own token vectors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from appliance.domain.ports import RerankScore
from appliance.inference.embedder import TokenEmbedder


def maxsim(query: np.ndarray, document: np.ndarray) -> float:
    """`query` (q, d) and `document` (t, d), rows L2-normalised; 0.0 if either is empty."""
    if query.shape[0] == 0 or document.shape[0] == 0:
        return 0.0
    return float((query @ document.T).max(axis=1).mean())


def maxsim_scores(query: np.ndarray, documents: Sequence[np.ndarray]) -> list[float]:
    return [maxsim(query, doc) for doc in documents]


def top_k(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the `k` best scores, best first; ties keep input order."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return order[:k] if k > 0 else order


class MaxSimReranker:
    """`Reranker` port over any `TokenEmbedder` (the in-process or the gRPC one)."""

    def __init__(self, embedder: TokenEmbedder) -> None:
        self.embedder = embedder
        self.model_id = f"maxsim:{embedder.model_id}"

    async def rerank(self, query: str, documents: Sequence[str]) -> list[RerankScore]:
        if not documents:
            return []
        vectors = await self.embedder.token_vectors([query, *documents])
        scores = maxsim_scores(vectors[0], vectors[1:])
        return [RerankScore(index=i, score=s) for i, s in enumerate(scores)]
