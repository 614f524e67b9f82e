"""`tokenizers` wrapper: padded int64 batches for the session, and token counting.

The shipped tokenizer.json pads every input to a fixed 128; that is overridden here so a
batch is padded only to its longest member and truncated at `max_seq_len`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer


@dataclass(frozen=True, slots=True)
class Batch:
    input_ids: np.ndarray        # (n, seq) int64
    attention_mask: np.ndarray   # (n, seq) int64
    token_type_ids: np.ndarray   # (n, seq) int64
    special: np.ndarray          # (n, seq) bool: [CLS]/[SEP] and padding

    def content_mask(self) -> np.ndarray:
        """True where a position holds a real (non-special, non-padding) token."""
        keep: np.ndarray = (self.attention_mask == 1) & ~self.special
        return keep


def _to_batch(encodings: Sequence[Encoding]) -> Batch:
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    types = np.array([e.type_ids for e in encodings], dtype=np.int64)
    special = np.array([e.special_tokens_mask for e in encodings], dtype=bool)
    return Batch(ids, mask, types, special)


class TextTokenizer:
    """A tokenizer.json loaded twice: once for model input (truncated, padded to the longest
    in the batch) and once untouched for counting and chunking."""

    def __init__(self, path: Path, max_seq_len: int) -> None:
        self.path = path
        self.max_seq_len = max_seq_len
        self._model = Tokenizer.from_file(str(path))
        self._model.no_padding()
        self._model.enable_truncation(max_length=max_seq_len)
        pad_id = self._model.token_to_id("[PAD]")
        self._model.enable_padding(pad_id=pad_id if pad_id is not None else 0,
                                   pad_token="[PAD]" if pad_id is not None else "<pad>")
        self._raw = Tokenizer.from_file(str(path))
        self._raw.no_padding()
        self._raw.no_truncation()

    @property
    def raw(self) -> Tokenizer:
        """The tokenizer without padding or truncation (for chunking by tokens, with offsets)."""
        return self._raw

    def batch(self, texts: Sequence[str]) -> Batch:
        """Model input for `texts`: [CLS] text [SEP], truncated to `max_seq_len`."""
        return _to_batch(self._model.encode_batch(list(texts)))

    def pair_batch(self, query: str, documents: Sequence[str]) -> Batch:
        """Model input for a cross-encoder: [CLS] query [SEP] document [SEP] per document."""
        return _to_batch(self._model.encode_batch([(query, d) for d in documents]))

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text as the model sees it (special tokens included, truncated)."""
        return [sum(e.attention_mask) for e in self._model.encode_batch(list(texts))]

    def count(self, texts: Sequence[str]) -> int:
        """Content tokens over all texts, without special tokens or truncation (usage)."""
        if not texts:
            return 0
        return sum(len(e.ids) for e in self._raw.encode_batch(list(texts), add_special_tokens=False))

    def counts(self, texts: Sequence[str]) -> list[int]:
        """Content tokens per text, as `count` measures them."""
        if not texts:
            return []
        return [len(e.ids) for e in self._raw.encode_batch(list(texts), add_special_tokens=False)]

    def window(self, text: str) -> Encoding:
        """One text encoded for the model with offsets, truncated to `max_seq_len`."""
        return self._model.encode(text)
