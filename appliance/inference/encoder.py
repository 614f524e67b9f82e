"""The synchronous model core: texts -> pooled vectors, token vectors, late-chunked vectors.

Pure numpy around one `EncoderSession`; no asyncio here. `OnnxEmbedder` runs these
methods in its bounded executor, and the gRPC server calls the same methods, so both
paths compute identical numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from appliance.inference.session import EncoderSession
from appliance.inference.tokenization import Batch, TextTokenizer

Span = tuple[int, int]


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

    def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per text, its content tokens' vectors (no [CLS]/[SEP]/padding), each L2-normalised:
        (tokens, dimensions) float32, possibly zero rows for an empty text."""
        out: list[np.ndarray] = [np.zeros((0, self.dimensions), dtype=np.float32)] * len(texts)
        for idx, batch, hidden in self._batches(texts):
            keep = batch.content_mask()
            for row, i in enumerate(idx):
                out[i] = l2_normalise(hidden[row][keep[row]])
        return out

    def embed_context(self, text: str, spans: Sequence[Span]) -> np.ndarray:
        """Late chunking: one vector per character span of `text`, pooled from token states
        computed with the surrounding document as context.

        The document is cut into consecutive windows of `max_seq_len - 2` tokens (the
        model's context limit); each chunk pools the tokens whose character offsets overlap
        its span. A span that covers no token (e.g. whitespace) is embedded on its own.
        """
        raw = self.tokenizer.raw.encode(text, add_special_tokens=False)
        ids, offsets = raw.ids, raw.offsets
        window = max(1, self.tokenizer.max_seq_len - 2)
        cls_id = self.tokenizer.raw.token_to_id("[CLS]")
        sep_id = self.tokenizer.raw.token_to_id("[SEP]")
        states = np.zeros((len(ids), self.dimensions), dtype=np.float32)
        lead = 1 if cls_id is not None else 0
        starts_of = list(range(0, len(ids), window))
        for first in range(0, len(starts_of), self.batch_size):
            group = starts_of[first:first + self.batch_size]
            rows = [([cls_id] if cls_id is not None else []) + ids[st:st + window]
                    + ([sep_id] if sep_id is not None else []) for st in group]
            width = max(len(r) for r in rows)
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros_like(input_ids)
            for r, row in enumerate(rows):
                input_ids[r, :len(row)] = row
                mask[r, :len(row)] = 1
            hidden = self.session.run(input_ids, mask, np.zeros_like(input_ids))
            for r, st in enumerate(group):
                n = min(window, len(ids) - st)
                states[st:st + n] = hidden[r, lead:lead + n]
        starts = np.array([o[0] for o in offsets], dtype=np.int64)
        ends = np.array([o[1] for o in offsets], dtype=np.int64)
        out = np.zeros((len(spans), self.dimensions), dtype=np.float32)
        alone: list[int] = []
        for k, (s, e) in enumerate(spans):
            inside = (starts < e) & (ends > s) if len(ids) else np.zeros(0, dtype=bool)
            if inside.any():
                out[k] = states[inside].mean(axis=0)
            else:
                alone.append(k)
        out = l2_normalise(out)
        if alone:
            out[alone] = self.embed([text[spans[k][0]:spans[k][1]] for k in alone])
        return out
