"""Splitting a document into chunks of at most N tokens, preferring heading and paragraph
boundaries, with an overlap of whole sentences between neighbours. Pure: token counts come
from a function (the embedder's tokenizer)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TokenCounter = Callable[[Sequence[str]], list[int]]

_HEADING = re.compile(r"^(#{1,6}\s|\S.*\n[=-]{3,}\s*$)")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True, slots=True)
class _Unit:
    text: str
    tokens: int
    starts_section: bool
    block: int  # which paragraph it came from: sentences of one paragraph rejoin with a space


def _blocks(text: str) -> list[tuple[str, bool]]:
    """Paragraphs (blank-line separated); a Markdown heading starts a new section."""
    out: list[tuple[str, bool]] = []
    for raw in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        block = raw.strip()
        if not block:
            continue
        lines = block.split("\n")
        # A heading glued to its paragraph still starts a section of its own.
        if len(lines) > 1 and lines[0].startswith("#"):
            out.append((lines[0], True))
            out.append(("\n".join(lines[1:]).strip(), False))
        else:
            out.append((block, bool(_HEADING.match(block))))
    return [(b, h) for b, h in out if b]


def _split_long(text: str, tokens: int, size: int) -> list[str]:
    """A single sentence longer than `size`: cut by words in proportion to its tokens."""
    words = text.split()
    per_piece = max(1, int(len(words) * size / max(tokens, 1) * 0.9))
    return [" ".join(words[i:i + per_piece]) for i in range(0, len(words), per_piece)]


def _units(text: str, count: TokenCounter, size: int) -> list[_Unit]:
    blocks = _blocks(text)
    if not blocks:
        return []
    block_tokens = count([b for b, _ in blocks])
    units: list[_Unit] = []
    for b, ((block, heading), tokens) in enumerate(zip(blocks, block_tokens, strict=True)):
        if tokens <= size:
            units.append(_Unit(block, tokens, heading, b))
            continue
        sentences = [s for s in _SENTENCE.split(block) if s.strip()]
        for i, (sentence, n) in enumerate(zip(sentences, count(sentences), strict=True)):
            pieces = [sentence] if n <= size else _split_long(sentence, n, size)
            piece_tokens = [n] if n <= size else count(pieces)
            for j, (piece, m) in enumerate(zip(pieces, piece_tokens, strict=True)):
                units.append(_Unit(piece, m, heading and i == 0 and j == 0, b))
    return units


def chunk_text(text: str, count: TokenCounter, size: int, overlap: int = 0) -> list[str]:
    """Chunks of at most about `size` tokens; a heading always opens a new chunk and is never
    left alone in one, and a chunk continuing a section repeats the previous chunk's trailing
    paragraphs or sentences of up to `overlap` tokens."""
    if size < 1 or overlap < 0 or overlap >= size:
        raise ValueError("chunk size must be >= 1 and overlap in [0, size)")
    chunks: list[str] = []
    current: list[_Unit] = []
    used = 0
    for unit in _units(text, count, size):
        lone_heading = len(current) == 1 and current[0].starts_section and not unit.starts_section
        if current and not lone_heading and (unit.starts_section or used + unit.tokens > size):
            chunks.append(_join(current))
            carry: list[_Unit] = []
            if not unit.starts_section and overlap:
                budget = overlap
                for prev in reversed(current):
                    if prev.tokens > budget or prev.starts_section:
                        break
                    carry.insert(0, prev)
                    budget -= prev.tokens
            # Never carry so much that the new unit no longer fits.
            while carry and sum(c.tokens for c in carry) + unit.tokens > size:
                carry.pop(0)
            current, used = carry, sum(c.tokens for c in carry)
        current.append(unit)
        used += unit.tokens
    if current:
        chunks.append(_join(current))
    return chunks


def _join(units: list[_Unit]) -> str:
    out = units[0].text
    for prev, unit in itertools.pairwise(units):
        out += (" " if unit.block == prev.block else "\n\n") + unit.text
    return out
