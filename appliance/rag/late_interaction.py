"""MaxSim rerank over token vectors stored at ingest, so a query runs only itself through the
model: 20 candidates of 200 tokens cost one short encode instead of 4,000 tokens of model,
which on a small CPU is what keeps a reranked search within its latency bar
(docs/benchmarks.md).

Scores are MaxSim of the query's token vectors against each chunk's stored rows, kept in
the compact format of `db/token_codec` (at most 8 kB per chunk; its MRR against full int8
rows is in docs/knowledge.md). `pack`/`unpack` are the int8 format 1 that came before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

import numpy as np

from appliance.db.token_codec import compact, expand_compact
from appliance.inference.embedder import TokenEmbedder
from appliance.inference.maxsim import maxsim

ENCODE_SLICE: Final = 64
EMBED_SLICE: Final = 128  # texts per model call at ingest: sorted by length within it, 40 MB of float32 at most


def pack(vectors: np.ndarray) -> bytes:
    """Each token scaled so its largest component is +-127: only directions matter (unpack
    normalises), so no scale needs storing."""
    peak = np.max(np.abs(vectors), axis=1, keepdims=True) if len(vectors) else np.ones((0, 1))
    return np.rint(vectors * (127.0 / np.maximum(peak, 1e-12))).astype(np.int8).tobytes()


def unpack(data: bytes, dims: int) -> np.ndarray:
    tokens = np.frombuffer(data, dtype=np.int8).reshape(-1, dims).astype(np.float32)
    norms = np.linalg.norm(tokens, axis=1, keepdims=True)
    out: np.ndarray = tokens / np.maximum(norms, 1e-6)
    return out


def _compact_all(tokens: Sequence[np.ndarray]) -> list[bytes]:
    return [compact(v) for v in tokens]


class StoredMaxSim:
    """The knowledge service's `LateInteraction` port over any `TokenEmbedder`'s token vectors."""

    def __init__(self, model: TokenEmbedder) -> None:
        self._model = model

    async def encode(self, texts: Sequence[str]) -> list[bytes]:
        # In slices: float32 token vectors are 40x their packed size (300 kB per chunk), and
        # a long document has thousands of chunks.
        out: list[bytes] = []
        for start in range(0, len(texts), ENCODE_SLICE):
            tokens = await self._model.token_vectors(list(texts[start:start + ENCODE_SLICE]))
            out.extend(await asyncio.to_thread(_compact_all, tokens))
        return out

    async def embed_and_encode(self, texts: Sequence[str]) -> tuple[Sequence[Sequence[float]], list[bytes]]:
        """One model pass per slice gives both; each slice's float32 token vectors are
        packed before the next is made."""
        pooled: list[list[float]] = []
        out: list[bytes] = []
        for start in range(0, len(texts), EMBED_SLICE):
            vectors, tokens = await self._model.embed_with_tokens(list(texts[start:start + EMBED_SLICE]))
            pooled.extend(vectors.tolist())
            # ~10 ms a chunk of numpy: off the event loop, which serves requests meanwhile
            out.extend(await asyncio.to_thread(_compact_all, tokens))
        return pooled, out

    async def prepare(self, query: str) -> np.ndarray:
        return (await self._model.token_vectors([query]))[0]

    async def score(self, prepared: np.ndarray, documents: Sequence[bytes]) -> list[float]:
        return [maxsim(prepared, expand_compact(d)) for d in documents]
