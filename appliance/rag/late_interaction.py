"""MaxSim rerank over token vectors stored at ingest, so a query runs only itself through the
model: 20 candidates of 200 tokens cost one short encode instead of 4,000 tokens of model,
which on a small CPU is what keeps a reranked search within its latency bar
(docs/benchmarks.md).

Scores are those of the default MaxSim reranker (same model, same token vectors; int8
storage moves a score by about 1e-3). Vectors travel as int8 bytes: tokens x dims,
each token scaled so its largest component is +-127.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

from appliance.inference.embedder import TokenEmbedder
from appliance.inference.maxsim import maxsim

ENCODE_SLICE: Final = 64


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


class StoredMaxSim:
    """The knowledge service's `LateInteraction` port over any `TokenEmbedder`'s token vectors."""

    def __init__(self, model: TokenEmbedder) -> None:
        self._model = model

    async def encode(self, texts: Sequence[str]) -> list[bytes]:
        # In slices: float32 token vectors are 4x their packed size (300 kB per chunk), and
        # a long document has thousands of chunks.
        out: list[bytes] = []
        for start in range(0, len(texts), ENCODE_SLICE):
            out.extend(pack(v) for v in await self._model.token_vectors(list(texts[start:start + ENCODE_SLICE])))
        return out

    async def prepare(self, query: str) -> np.ndarray:
        return (await self._model.token_vectors([query]))[0]

    async def score(self, prepared: np.ndarray, documents: Sequence[bytes]) -> list[float]:
        dims = self._model.dimensions
        return [maxsim(prepared, unpack(d, dims)) for d in documents]
