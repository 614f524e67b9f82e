"""The first or last `n` tokens of a long text, tokenising only a window of it.

The router's encoder reads a bounded slice of a prompt (`prompt_encoder.py`: USE its first 48
and last 16 tokens, the e5 token table its first 256), but tokenising the whole text to
find them cost ~1.5 ms of CPU per model for a 512-token prompt on this busy CPU, a third of
the decision. So the head is tokenised from the first `(n + SLACK) *
CHARS_PER_TOKEN` characters and the tail from as many last ones.

Exact, not approximate: a window can cut a word, so the tokens of the window's last word
(first, for a tail) are dropped, by the tokenizer's own word ids; the answer is taken only
when `n` tokens remain, else the whole text is tokenised as before. Text without spaces (Chinese,
Japanese, Thai) is one "word" to a Metaspace pre-tokenizer and so always takes the whole-text
path. tests/inference/test_prompt_encoder.py checks equality on the labelled prompts.
"""

from __future__ import annotations

from typing import Final

from tokenizers import Encoding, Tokenizer

CHARS_PER_TOKEN: Final = 5    # English SentencePiece/XLM-R pieces average ~4 characters
SLACK: Final = 16             # tokens of margin for the dropped partial word and short words


def _encode(tokenizer: Tokenizer, text: str) -> Encoding:
    return tokenizer.encode(text, add_special_tokens=False)


def _whole_words(encoding: Encoding, drop_first: bool) -> list[int]:
    """The ids of `encoding` without its last word's tokens (or its first's)."""
    words = encoding.word_ids
    ids: list[int] = encoding.ids
    if not words or words[0] is None:
        return []
    edge = words[0] if drop_first else words[-1]
    return [i for i, w in zip(ids, words, strict=True) if w != edge]


def head_tail_ids(tokenizer: Tokenizer, text: str, head: int, tail: int) -> tuple[list[int], bool]:
    """(the first `head` and last `tail` token ids, True) when the text has more than
    `head + tail` tokens, else (all its ids, False): what tokenising all of `text` and cutting
    would give, from two windows when they suffice."""
    head_chars = (head + SLACK) * CHARS_PER_TOKEN
    tail_chars = (tail + SLACK) * CHARS_PER_TOKEN if tail else 0
    if len(text) > head_chars + tail_chars:
        first = _whole_words(_encode(tokenizer, text[:head_chars]), drop_first=False)
        last = _whole_words(_encode(tokenizer, text[len(text) - tail_chars:]), drop_first=True) if tail else []
        if len(first) >= head and len(last) >= tail:
            return first[:head] + (last[len(last) - tail:] if tail else []), True
    ids: list[int] = _encode(tokenizer, text).ids
    if len(ids) > head + tail:
        return ids[:head] + (ids[len(ids) - tail:] if tail else []), True
    return ids, False
