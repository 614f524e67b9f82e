"""`OnnxEmbedder`: the in-process `Embedder` port adapter (onnxruntime + tokenizers).

Model calls run in a `BoundedExecutor`, never on the event loop. Beyond the port it offers
`token_vectors` (for MaxSim), as `TokenEmbedder` describes, and `tokenizer` for chunking by
the embedder's own tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer

from appliance.inference.encoder import TextEncoder
from appliance.inference.executor import BoundedExecutor


class TokenEmbedder(Protocol):
    """An `Embedder` that also exposes per-token vectors and its tokenizer."""

    model_id: str
    dimensions: int

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer without padding or truncation (offsets included), for chunking
        by the embedder's own tokens; loading it does not load the model."""
        ...

    @property
    def max_seq_len(self) -> int:
        """Tokens the model sees per text (special tokens included); longer input is truncated."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        ...

    async def count_tokens(self, texts: Sequence[str]) -> int:
        ...

    async def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        ...

    async def embed_with_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(len(texts), dimensions) pooled vectors and each text's token vectors, from one
        model pass (ingest needs both)."""
        ...


class OnnxEmbedder:
    path = "local"

    def __init__(self, encoder: TextEncoder, executor: BoundedExecutor, model_id: str) -> None:
        self.encoder = encoder
        self.executor = executor
        self.model_id = model_id
        self.dimensions = encoder.dimensions

    @property
    def tokenizer(self) -> Tokenizer:
        """The embedder's tokenizer, without padding or truncation (offsets included)."""
        return self.encoder.tokenizer.raw

    @property
    def max_seq_len(self) -> int:
        return self.encoder.tokenizer.max_seq_len

    async def embed_array(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        items = list(texts)
        if len(items) <= self.encoder.batch_size:
            return await self.executor.run(lambda: self.encoder.embed(items))
        # One executor job per batch: a large ingest does not hold the model for seconds
        # while a chat's query embedding waits behind it.
        out = np.zeros((len(items), self.dimensions), dtype=np.float32)
        for idx in self.encoder.plan(items):
            part = [items[i] for i in idx]
            out[idx] = await self.executor.run(lambda part=part: self.encoder.embed(part))  # type: ignore[misc]
        return out

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalised vectors, one per text, in input order."""
        return (await self.embed_array(texts)).tolist()  # type: ignore[no-any-return]

    async def count_tokens(self, texts: Sequence[str]) -> int:
        """Content tokens (no special tokens, no truncation): the `usage` of a request."""
        items = list(texts)
        return await self.executor.run(lambda: self.encoder.tokenizer.count(items))

    async def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        items = list(texts)
        if len(items) <= self.encoder.batch_size:
            return await self.executor.run(lambda: self.encoder.token_vectors(items))
        out: list[np.ndarray] = [np.zeros((0, self.dimensions), dtype=np.float32)] * len(items)
        for idx in self.encoder.plan(items):
            part = [items[i] for i in idx]
            vectors = await self.executor.run(lambda part=part: self.encoder.token_vectors(part))  # type: ignore[misc]
            for i, v in zip(idx, vectors, strict=True):
                out[i] = v
        return out

    async def embed_with_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        items = list(texts)
        if len(items) <= self.encoder.batch_size:
            return await self.executor.run(lambda: self.encoder.embed_with_tokens(items))
        pooled = np.zeros((len(items), self.dimensions), dtype=np.float32)
        tokens: list[np.ndarray] = [np.zeros((0, self.dimensions), dtype=np.float32)] * len(items)
        for idx in self.encoder.plan(items):
            part = [items[i] for i in idx]
            got, vectors = await self.executor.run(
                lambda part=part: self.encoder.embed_with_tokens(part))  # type: ignore[misc]
            pooled[idx] = got
            for i, v in zip(idx, vectors, strict=True):
                tokens[i] = v
        return pooled, tokens

    def close(self) -> None:
        self.executor.close()
