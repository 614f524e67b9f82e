"""The chunker: sizes in tokens, heading and paragraph boundaries, overlap."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from appliance.domain.chunking import chunk_text


def words(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) for t in texts]


DOC = """# Solar

Panels make electricity from light. Output falls in winter.

## Batteries

Lithium iron phosphate cells last long. They dislike deep cold.

## Inverters

""" + " ".join(f"word{i}" for i in range(95)) + "."


def test_headings_open_chunks_and_are_never_alone() -> None:
    chunks = chunk_text(DOC, words, size=30, overlap=0)
    assert chunks[0].startswith("# Solar") and "Output falls in winter." in chunks[0]
    assert chunks[1].startswith("## Batteries")
    assert chunks[2].startswith("## Inverters\n\nword0")
    assert not any(c.strip() in ("## Inverters", "## Batteries") for c in chunks)


def test_no_chunk_exceeds_the_size_and_nothing_is_lost() -> None:
    chunks = chunk_text(DOC, words, size=30, overlap=0)
    assert all(n <= 30 for n in words(chunks))
    joined = " ".join(chunks)
    assert all(f"word{i}" in joined for i in range(95))


def test_overlap_repeats_trailing_sentences_within_a_section() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(12))
    chunks = chunk_text(text, words, size=20, overlap=6)
    assert len(chunks) > 1
    for before, after in itertools.pairwise(chunks):
        assert before.split(". ")[-1].rstrip(".") in after  # the last sentence is carried over


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        chunk_text("x", words, size=10, overlap=10)
