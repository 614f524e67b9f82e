"""Late-interaction MaxSim: score = mean over query tokens of the best cosine to any
document token. The default reranker, over the embedder's own token vectors."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from appliance.domain.ports import RerankScore
from appliance.inference.embedder import TokenEmbedder
from appliance.inference.metrics import RERANK_CACHE


def maxsim(query: np.ndarray, document: np.ndarray) -> float:
    """`query` (q, d) and `document` (t, d), rows L2-normalised; 0.0 if either is empty."""
    if query.shape[0] == 0 or document.shape[0] == 0:
        return 0.0
    return float((query @ document.T).max(axis=1).mean())


def maxsim_scores(query: np.ndarray, documents: Sequence[np.ndarray]) -> list[float]:
    return [maxsim(query, doc) for doc in documents]


class TokenVectorCache:
    """Bounded LRU of document token vectors, stored as float16 (a 200-token chunk of a
    384-dim model takes about 150 kB; 256 entries of 256 tokens at most 50 MB). RAG questions over one workspace keep meeting the same
    chunks; computing their token vectors is most of a rerank's cost."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> np.ndarray | None:
        with self._lock:
            found = self._items.get(text)
            if found is not None:
                self._items.move_to_end(text)
        RERANK_CACHE.labels("hit" if found is not None else "miss").inc()
        return None if found is None else found.astype(np.float32)

    def put(self, text: str, vectors: np.ndarray) -> np.ndarray:
        """Store `vectors`; returns them as the cache will give them back (float16-rounded)."""
        stored = vectors.astype(np.float16)
        with self._lock:
            self._items[text] = stored
            self._items.move_to_end(text)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)
        rounded: np.ndarray = stored.astype(np.float32)
        return rounded

    def __len__(self) -> int:
        return len(self._items)


class MaxSimReranker:
    """`Reranker` port over any `TokenEmbedder` (the in-process or the gRPC one).

    `doc_max_tokens` (> 0) scores only each document's first tokens: the cost of a rerank
    is the model run over every candidate's tokens, so this is the knob for latency.
    """

    def __init__(self, embedder: TokenEmbedder, *, doc_max_tokens: int = 0, cache_entries: int = 0) -> None:
        self.embedder = embedder
        self.model_id = f"maxsim:{embedder.model_id}"
        self.doc_max_tokens = doc_max_tokens
        self.cache = TokenVectorCache(cache_entries) if cache_entries > 0 else None

    def _clip(self, text: str) -> str:
        if self.doc_max_tokens <= 0:
            return text
        offsets = self.embedder.tokenizer.encode(text, add_special_tokens=False).offsets
        return text if len(offsets) <= self.doc_max_tokens else text[:offsets[self.doc_max_tokens - 1][1]]

    async def rerank(self, query: str, documents: Sequence[str]) -> list[RerankScore]:
        if not documents:
            return []
        docs = [self._clip(d) for d in documents]
        cached = [self.cache.get(d) if self.cache is not None else None for d in docs]
        missing = [i for i, c in enumerate(cached) if c is None]
        vectors = await self.embedder.token_vectors([query, *(docs[i] for i in missing)])
        for slot, i in enumerate(missing, start=1):
            if self.cache is None:
                cached[i] = vectors[slot]
            else:
                # Score with the cache's float16 rounding on a miss too, so that a result does
                # not depend on whether it was served from the cache.
                cached[i] = self.cache.put(docs[i], vectors[slot])
        scores = maxsim_scores(vectors[0], [c for c in cached if c is not None])
        return [RerankScore(index=i, score=s) for i, s in enumerate(scores)]
