"""How like each model card a prompt is: the scoring half of the semantic router
(`semantic_router.py`), built once from the vectors of the cards' texts (a description and a
few examples each, which is all a catalog gives) and asked once per prompt. Plain Python over
lists: 3 cards x 6 texts is ~20 dot products of 384-512 numbers, ~0.3 ms on this CPU (~0.5-1 ms
when it is busy); too little for numpy to win back its conversions, and the domain has no numpy.

Two ways to score, `Scoring`:

- ``"nearest"`` (the default): the encoder's vector is cut into its `Block`s (the router
  encoder's USE half and e5 token half, `prompt_encoder.PROMPT_BLOCKS`), each scored on its
  own, and the blocks' scores summed, each weighted by the share of the prompt's vector it
  holds (its squared norm: for the router encoder, the USE half's gate, so a Hindi prompt that
  USE cannot read rests on the e5 half). In a sentence block (`Block.nearest`) a card scores
  the mean cosine of the prompt to its `nearest` (2) most similar texts: a card's texts are
  often several kinds of request (an email, a fact, a recipe), and their centroid is like
  none of them, while the nearest texts are like the prompt when the card covers it. In a
  bag-of-tokens block (`nearest=False`) one short text's tokens say little, so there a card
  scores the cosine to its centroid in that block. Measured in docs/routing.md.
- ``"centroid"``: cosine to the normalised mean of the card's texts over the whole vector,
  the first method (kept for comparison).

A block the prompt has no weight in is skipped; a card text that is all zeros in a block
(an encoder that could not read it) is left out of that block, and a card left with nothing
there scores 0 in it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

Scoring = Literal["nearest", "centroid"]
SCORINGS: Final[tuple[Scoring, ...]] = ("nearest", "centroid")


@dataclass(frozen=True, slots=True)
class Block:
    """A run of the encoder's vector that one model made: `size` numbers; `nearest` says a
    card is scored there by its nearest texts (a sentence encoder) or by its centroid (a bag
    of token vectors)."""

    size: int
    nearest: bool = True


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    return float(sum(map(operator.mul, a, b)))


def _unit(v: Sequence[float]) -> list[float] | None:
    norm = math.sqrt(dot(v, v))
    return None if norm == 0.0 else [x / norm for x in v]


def _normalised_mean(vectors: Sequence[Sequence[float]]) -> list[float] | None:
    if not vectors:
        return None
    return _unit([sum(column) / len(vectors) for column in zip(*vectors, strict=True)])


class CardIndex:
    """The cards' vectors, arranged for one scoring; `scores()` is the per-prompt part."""

    def __init__(self, vectors_by_card: Mapping[str, Sequence[Sequence[float]]], *,
                 scoring: Scoring = "nearest", nearest: int = 2, blocks: Sequence[Block] | None = None) -> None:
        if scoring not in SCORINGS:
            raise ValueError(f"unknown scoring {scoring!r} (expected {', '.join(SCORINGS)})")
        if nearest < 1:
            raise ValueError("nearest must be >= 1")
        if not vectors_by_card or any(not vs for vs in vectors_by_card.values()):
            raise ValueError("every card needs at least one vector")
        dims = {len(v) for vs in vectors_by_card.values() for v in vs}
        if len(dims) != 1:
            raise ValueError("the encoder returned vectors of different lengths")
        self.dimensions: int = dims.pop()
        self.blocks: tuple[Block, ...] = tuple(blocks) if blocks else (Block(self.dimensions),)
        if any(b.size < 1 for b in self.blocks) or sum(b.size for b in self.blocks) != self.dimensions:
            raise ValueError(f"blocks of {[b.size for b in self.blocks]} do not add up to the encoder's "
                             f"{self.dimensions} dimensions")
        self.scoring: Scoring = scoring
        self.nearest = nearest
        self._centroids: dict[str, list[float]] = {}
        for card, vs in vectors_by_card.items():
            centroid = _normalised_mean(vs)
            if centroid is None:
                raise ValueError(f"card {card!r}'s texts embed to a zero vector")
            self._centroids[card] = centroid
        bounds: list[tuple[int, int]] = []
        for b in self.blocks:
            lo = bounds[-1][1] if bounds else 0
            bounds.append((lo, lo + b.size))
        self._bounds = bounds
        # per card, per block: the unit vectors of the card's texts there (nearest blocks), or
        # a one-element list of their centroid there (the others); empty when all are zeros
        self._targets: dict[str, list[list[list[float]]]] = {}
        for card, vs in vectors_by_card.items():
            per_block: list[list[list[float]]] = []
            for block, (lo, hi) in zip(self.blocks, bounds, strict=True):
                units = [u for v in vs if (u := _unit(v[lo:hi])) is not None]
                mean = None if block.nearest else _normalised_mean(units)
                per_block.append(units if block.nearest else [mean] if mean is not None else [])
            self._targets[card] = per_block

    def shares(self, vector: Sequence[float]) -> list[float]:
        """The share of `vector`'s squared norm in each block (they sum to 1)."""
        squares = [dot(vector[lo:hi], vector[lo:hi]) for lo, hi in self._bounds]
        total = sum(squares)
        if total == 0.0:
            raise ValueError("the prompt embeds to a zero vector")
        return [sq / total for sq in squares]

    def scores(self, vector: Sequence[float], cards: Sequence[str]) -> dict[str, float]:
        """Similarity of `vector` (the prompt's) to each of `cards`, higher is more alike."""
        if len(vector) != self.dimensions:
            raise ValueError("prompt and card vectors differ in length")
        if self.scoring == "centroid":
            return {card: dot(vector, self._centroids[card]) for card in cards}
        out = dict.fromkeys(cards, 0.0)
        total = dot(vector, vector)
        if total == 0.0:
            raise ValueError("the prompt embeds to a zero vector")
        for block, (lo, hi) in enumerate(self._bounds):
            part = vector[lo:hi]
            squared = dot(part, part)
            if squared == 0.0:
                continue
            share, norm = squared / total, math.sqrt(squared)
            for card in cards:
                sims = sorted((dot(part, t) for t in self._targets[card][block]), reverse=True)[:self.nearest]
                if sims:
                    out[card] += share * sum(sims) / (len(sims) * norm)
        return out
