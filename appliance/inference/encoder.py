"""The synchronous model core: texts -> pooled vectors and per-token vectors.

Pure numpy around one `EncoderSession`; no asyncio here. `OnnxEmbedder` runs these
methods in its bounded executor, and the gRPC server calls the same methods, so both
paths compute identical numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from appliance.inference.session import EncoderSession
from appliance.inference.tokenization import Batch, TextTokenizer


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    out: np.ndarray = (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return out


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of `hidden` (n, seq, d) over positions where `mask` (n, seq) is 1."""
    weights = mask.astype(np.float32)[..., None]
    summed = (hidden * weights).sum(axis=1)
    pooled: np.ndarray = summed / np.maximum(weights.sum(axis=1), 1e-9)
    return pooled


class TextEncoder:
    def __init__(self, session: EncoderSession, tokenizer: TextTokenizer, batch_size: int) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.dimensions = session.probe() if session.output_dim is None else session.output_dim

    def plan(self, texts: Sequence[str]) -> list[list[int]]:
        """Indices of `texts` grouped into batches of similar length (less padding)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        return [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]

    def _batches(self, texts: Sequence[str]) -> Iterator[tuple[list[int], Batch, np.ndarray]]:
        """Forward passes over `texts`, batch by batch; yields (original indices, batch,
        last_hidden_state)."""
        for idx in self.plan(texts):
            batch = self.tokenizer.batch([texts[i] for i in idx])
            hidden = self.session.run(batch.input_ids, batch.attention_mask, batch.token_type_ids)
            yield idx, batch, hidden

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimensions) float32, mean-pooled over the mask and L2-normalised."""
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for idx, batch, hidden in self._batches(texts):
            out[idx] = l2_normalise(mean_pool(hidden, batch.attention_mask))
        return out

    def embed_with_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """`embed` and `token_vectors` from one forward pass: what ingest needs per chunk,
        for half the model time of the two calls."""
        pooled = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        tokens: list[np.ndarray] = [np.zeros((0, self.dimensions), dtype=np.float32)] * len(texts)
        for idx, batch, hidden in self._batches(texts):
            pooled[idx] = l2_normalise(mean_pool(hidden, batch.attention_mask))
            keep = batch.content_mask()
            for row, i in enumerate(idx):
                tokens[i] = l2_normalise(hidden[row][keep[row]])
        return pooled, tokens

    def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per text, its content tokens' vectors (no [CLS]/[SEP]/padding), each L2-normalised:
        (tokens, dimensions) float32, possibly zero rows for an empty text."""
        out: list[np.ndarray] = [np.zeros((0, self.dimensions), dtype=np.float32)] * len(texts)
        for idx, batch, hidden in self._batches(texts):
            keep = batch.content_mask()
            for row, i in enumerate(idx):
                out[i] = l2_normalise(hidden[row][keep[row]])
        return out
