"""Semantic routing: a virtual model name whose requests go to the candidate whose card the
prompt is most like, and to a default whenever the router cannot say.

Each candidate has a card: a description and a few example prompts. `prepare()` embeds every
card text once and builds a `card_scores.CardIndex`; `choose()` embeds the prompt and scores
it against each card. By default (`scoring="nearest"`) a card's score is, per block of the
encoder's vector, the mean cosine to its two texts most like the prompt (in the sentence
encoder's block; in the token-bag block, to the card's centroid there), the blocks weighted by
the prompt's own share of each; `scoring="centroid"` is cosine to the card's centroid (the
normalised mean of its texts) over the whole vector. Why, and how much each scores:
docs/routing.md.

- Fit first: a candidate whose `context_length` is below the prompt's tokens, or whose price
  is above `max_cost_per_mtok`, is not a candidate for this prompt.
- Without weights the highest score wins, except that the default wins unless another
  card beats it by `margin` (a prompt that is about equally like everything is an everyday
  one, and the default is usually the cheap model). `margin` may be one per block of the
  encoder's vector: the default's lead is then their mean weighted by the prompt's share of
  each (a prompt the sentence encoder cannot read rests on the token half, whose scores lie
  closer together, so it needs less).
- With `weights` (quality, latency, cost) each fitting candidate gets, in [0, 1] among them,
  its similarity (min-max), its measured latency (lower is better; unknown counts as the
  median of the known) and its price (lower is better; no price is free), and the weighted
  sum wins.
- With `training` (labelled prompts) and a `trainer`, a classifier learnt from them at
  `prepare()` scores the prompt instead of the cards (`prompt_classifier.py`): each fitting
  candidate's probability, the highest wins (no margin); weights apply to it as to a similarity.
- With `unlabelled` (prompts without labels) and a `trainer`, the router teaches itself: at
  `prepare()` the cards label each of those prompts as they would route it (scores and margin,
  no fit filters), and the classifier learns from the cards' own texts and those prompts. The
  cards stay the only source of labels; a classifier over a few hundred prompts the cards
  labelled routes better than the cards themselves (docs/routing.md, "Teaching itself").
- Fail open: `choose()` never raises. An encoder error, a result past `budget_ms`, an empty
  prompt or no fitting candidate all return the default, with the reason, `defaulted=True`.

The reason is short enough for a response header: ``cos 0.532 +0.041 over general`` (the
winner's score, a weighted mean of cosines, and its lead), ``default: over budget (14.2 ms > 10 ms)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import statistics
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

from appliance.domain.card_scores import SCORINGS, Block, CardIndex, Scoring
from appliance.domain.prompt_classifier import LearntModels, LinearModel, PromptTrainer

_WEIGHT_KEYS: Final = ("quality", "latency", "cost")
_NO_LATENCY: Final[Mapping[str, float]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Card:
    """What a candidate model is for, in words: the router's only view of it."""

    id: str
    description: str
    examples: tuple[str, ...] = ()
    context_length: int | None = None
    price_per_mtok: float | None = None

    def texts(self) -> list[str]:
        return [t for t in (self.description, *self.examples) if t.strip()]


@dataclass(frozen=True, slots=True)
class Weights:
    """Multi-factor selection: how much similarity, measured latency and price count."""

    quality: float = 1.0
    latency: float = 0.0
    cost: float = 0.0

    def __post_init__(self) -> None:
        values = (self.quality, self.latency, self.cost)
        if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
            raise ValueError(f"router weights must be >= 0 and not all 0: {self}")

    @classmethod
    def from_mapping(cls, weights: Mapping[str, float]) -> Weights:
        unknown = sorted(set(weights) - set(_WEIGHT_KEYS))
        if unknown:
            raise ValueError(f"unknown router weight {unknown[0]!r} (expected {', '.join(_WEIGHT_KEYS)})")
        return cls(**{k: float(weights.get(k, 0.0)) for k in _WEIGHT_KEYS})


@dataclass(frozen=True, slots=True)
class Decision:
    """The router's answer: the candidate id to use, and why (short, for a header)."""

    model: str
    reason: str
    score: float | None      # the winner's similarity, or its weighted score with weights
    defaulted: bool          # True when the default was taken because the router could not decide
    elapsed_ms: float


TRAINING_SLICE: Final = 256   # training prompts per encoder call


class PromptEncoder(Protocol):
    """Texts -> L2-normalised vectors, one per text, in input order (all the same length)."""

    model_id: str

    async def encode(self, texts: Sequence[str]) -> list[list[float]]:
        """Prompts, during a decision: the encoder may read a bounded slice of each, and a
        remote one is held to the decision's budget."""
        ...

    async def encode_cards(self, texts: Sequence[str]) -> list[list[float]]:
        """A router's card texts, once at start: read whole, no budget."""
        ...


def _spread(values: Mapping[str, float], lower_is_better: bool) -> dict[str, float]:
    """Min-max to [0, 1] (1 is best); all 1.0 when the values are equal."""
    lo, hi = min(values.values()), max(values.values())
    if hi - lo <= 1e-12:
        return dict.fromkeys(values, 1.0)
    if lower_is_better:
        return {k: (hi - v) / (hi - lo) for k, v in values.items()}
    return {k: (v - lo) / (hi - lo) for k, v in values.items()}


class SemanticRouter:
    def __init__(self, id: str, cards: Sequence[Card], default: str, encoder: PromptEncoder, *,
                 budget_ms: float, weights: Weights | Mapping[str, float] | None = None,
                 max_cost_per_mtok: float | None = None, margin: float | Sequence[float] = 0.0,
                 scoring: Scoring = "nearest", nearest: int = 2, blocks: Sequence[Block] | None = None,
                 training: Sequence[tuple[str, str]] = (), unlabelled: Sequence[str] = (),
                 trainer: PromptTrainer | None = None, learnt_models: LearntModels | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        """`blocks`: the parts of the encoder's vector that come from different models
        (`prompt_encoder.PROMPT_BLOCKS`), scored apart by `scoring="nearest"`; None is one
        sentence block. `nearest`: how many of a card's texts count in a sentence block.
        `margin`: one for the whole vector, or one per block. `training`: (prompt, candidate)
        pairs for `trainer` to learn a classifier from, every candidate among them. `unlabelled`:
        prompts the cards label for `trainer` instead (one or the other, not both).
        `learnt_models`: where a fitted classifier is kept for the next start."""
        ids = [c.id for c in cards]
        if not ids:
            raise ValueError(f"router {id!r} has no candidates")
        if len(set(ids)) != len(ids):
            raise ValueError(f"router {id!r} lists a candidate twice")
        if budget_ms <= 0:
            raise ValueError(f"router {id!r}: budget_ms must be > 0")
        n_blocks = len(blocks) if blocks else 1
        margins = (margin,) * n_blocks if isinstance(margin, int | float) else tuple(margin)
        if len(margins) != n_blocks:
            raise ValueError(f"router {id!r}: {len(margins)} margins for an encoder of {n_blocks} blocks")
        if any(m < 0 for m in margins):
            raise ValueError(f"router {id!r}: margin must be >= 0")
        if nearest < 1:
            raise ValueError(f"router {id!r}: nearest must be >= 1")
        if scoring not in SCORINGS:
            raise ValueError(f"router {id!r}: unknown scoring {scoring!r} (expected {', '.join(SCORINGS)})")
        if training and unlabelled:
            raise ValueError(f"router {id!r}: give training prompts or unlabelled ones, not both")
        if (training or unlabelled) and trainer is None:
            raise ValueError(f"router {id!r}: training prompts need a trainer")
        if training and {label for _, label in training} != set(ids):
            raise ValueError(f"router {id!r}: training prompts must name each candidate and nothing else")
        self.id = id
        self.cards: tuple[Card, ...] = tuple(cards)
        self.default = default
        self.encoder = encoder
        self.budget_ms = budget_ms
        self.weights = Weights.from_mapping(weights) if isinstance(weights, Mapping) else weights
        self.max_cost_per_mtok = max_cost_per_mtok
        self.margins: tuple[float, ...] = margins
        self.scoring: Scoring = scoring
        self.nearest = nearest
        self.blocks = tuple(blocks) if blocks else None
        self.training = tuple(training)
        self.unlabelled = tuple(unlabelled)
        self.trainer = trainer
        self.learnt_models = learnt_models
        self._model: LinearModel | None = None
        self._clock = clock
        self._index: CardIndex | None = None

    @property
    def prepared(self) -> bool:
        return self._index is not None

    async def prepare(self) -> None:
        """Embed every card once (one encoder call); raises what the encoder raises, so a
        start-up can say which router could not be prepared."""
        texts: list[str] = []
        owners: list[str] = []
        for card in self.cards:
            card_texts = card.texts()
            if not card_texts:
                raise ValueError(f"router {self.id!r}: card {card.id!r} has no description or examples")
            texts.extend(card_texts)
            owners.extend([card.id] * len(card_texts))
        vectors = await self.encoder.encode_cards(texts)
        if len(vectors) != len(texts):
            raise ValueError(f"router {self.id!r}: the encoder returned {len(vectors)} vectors for {len(texts)} texts")
        by_card: dict[str, list[list[float]]] = {}
        for owner, vector in zip(owners, vectors, strict=True):
            by_card.setdefault(owner, []).append(vector)
        index = CardIndex(by_card, scoring=self.scoring, nearest=self.nearest, blocks=self.blocks)
        if self.trainer is not None and (self.training or self.unlabelled):
            self._model = await self._learnt(self.trainer, index, vectors, owners)
        self._index = index

    async def _learnt(self, trainer: PromptTrainer, index: CardIndex, vectors: Sequence[Sequence[float]],
                      owners: Sequence[str]) -> LinearModel:
        """The classifier: from `learnt_models` when it holds one for exactly these inputs
        (the cards' vectors stand for the encoder: any change to it changes them), else fitted."""
        store = self.learnt_models
        if store is None:
            return await self._fit(trainer, index, vectors, owners)
        key = self._learning_key(trainer, vectors, owners)
        kept = await store.get(key)
        if kept is not None and set(kept.classes) == {c.id for c in self.cards} and kept.dimensions == index.dimensions:
            return kept
        model = await self._fit(trainer, index, vectors, owners)
        await store.put(key, model)
        return model

    async def _fit(self, trainer: PromptTrainer, index: CardIndex, vectors: Sequence[Sequence[float]],
                   owners: Sequence[str]) -> LinearModel:
        if self.training:
            learnt = await self._embed_all([prompt for prompt, _ in self.training])
            return await trainer.fit(learnt, [label for _, label in self.training])
        pool = [v for v in await self._embed_all(self.unlabelled) if any(v)]   # a zero vector says nothing
        labels = [self._card_choice(index, v) for v in pool]
        return await trainer.fit([*vectors, *pool], [*owners, *labels])

    def _learning_key(self, trainer: PromptTrainer, vectors: Sequence[Sequence[float]], owners: Sequence[str]) -> str:
        """What the classifier depends on, hashed: the cards' vectors (to 5 decimals), their
        owners, what decides a card label (default, margins, scoring), the prompts, the trainer."""
        digest = hashlib.sha256()
        head = [trainer.recipe, self.default, list(self.margins), self.scoring, self.nearest,
                [[b.size, b.nearest] for b in self.blocks or ()], list(owners), list(self.training),
                list(self.unlabelled)]
        digest.update(json.dumps(head).encode())
        for vector in vectors:
            digest.update(",".join(f"{x:.5f}" for x in vector).encode())
        return digest.hexdigest()

    async def _embed_all(self, prompts: Sequence[str]) -> list[array[float]]:
        """Prompts to learn from, embedded as cards are (whole, no budget), in slices within a
        service's inputs per call; kept as 4-byte floats: 924 prompts' vectors as Python
        floats are ~26 MB, which a worker's RSS kept after the fit."""
        out: list[array[float]] = []
        for start in range(0, len(prompts), TRAINING_SLICE):
            out += [array("f", v) for v in await self.encoder.encode_cards(prompts[start:start + TRAINING_SLICE])]
        return out

    def _card_choice(self, index: CardIndex, vector: Sequence[float]) -> str:
        """The candidate the cards alone would pick for `vector` (as `choose` does, among every
        candidate): the label a prompt without one learns under."""
        sims, _ = self._card_sims(index, vector, [c.id for c in self.cards])
        return max(sims, key=sims.__getitem__)

    def fits(self, card: Card, prompt_tokens: int | None) -> bool:
        if prompt_tokens is not None and card.context_length is not None and prompt_tokens > card.context_length:
            return False
        return not (self.max_cost_per_mtok is not None and card.price_per_mtok is not None
                    and card.price_per_mtok > self.max_cost_per_mtok)

    async def choose(self, prompt: str, *, prompt_tokens: int | None = None,
                     latency_ms: Mapping[str, float] = _NO_LATENCY) -> Decision:
        """The candidate for `prompt`; never raises (but lets a cancellation through)."""
        start = self._clock()
        try:
            return await self._choose(prompt, prompt_tokens, latency_ms, start)
        except Exception as exc:  # fail open: the router never fails a request
            return self._default(f"default: {type(exc).__name__}", start)

    async def _choose(self, prompt: str, prompt_tokens: int | None, latency_ms: Mapping[str, float],
                      start: float) -> Decision:
        index = self._index
        if index is None:
            return self._default("default: not prepared", start)
        fitting = [c for c in self.cards if self.fits(c, prompt_tokens)]
        if not fitting:
            return self._default("default: no candidate fits", start)
        if len(fitting) == 1:
            return self._decision(fitting[0].id, "only candidate that fits", None, start)
        if not prompt.strip():
            return self._default("default: empty prompt", start)
        remaining_s = (self.budget_ms - self._elapsed_ms(start)) / 1000
        try:
            async with asyncio.timeout(max(remaining_s, 0.0)):
                vectors = await self.encoder.encode([prompt])
        except TimeoutError:
            return self._default(f"default: over budget ({self._elapsed_ms(start):.1f} ms)", start)
        elapsed = self._elapsed_ms(start)
        if elapsed > self.budget_ms:
            return self._default(f"default: over budget ({elapsed:.1f} ms > {self.budget_ms:g} ms)", start)
        ids = [c.id for c in fitting]
        if self._model is not None:
            sims, margin, kind = self._model.probabilities(vectors[0], ids), 0.0, "p"
        else:
            (sims, margin), kind = self._card_sims(index, vectors[0], ids), "cos"
        if self.weights is None:
            return self._by_similarity(sims, margin, kind, start)
        return self._by_weights(fitting, sims, latency_ms, self.weights, start)

    def _card_sims(self, index: CardIndex, vector: Sequence[float], ids: Sequence[str]) -> tuple[dict[str, float], float]:
        """Each of `ids`' card score for `vector`, the default's with its margin added; and that margin."""
        margin = self._margin(index, vector)
        return {k: v + (margin if k == self.default else 0.0) for k, v in index.scores(vector, ids).items()}, margin

    def _margin(self, index: CardIndex, vector: Sequence[float]) -> float:
        """The default's lead for this prompt: the margins weighted by its share of each block."""
        if len(self.margins) == 1:
            return self.margins[0]
        return sum(m * share for m, share in zip(self.margins, index.shares(vector), strict=True))

    def _by_similarity(self, sims: Mapping[str, float], margin: float, kind: str, start: float) -> Decision:
        ranked = sorted(sims.items(), key=lambda kv: kv[1], reverse=True)
        (best, score), (second, runner_up) = ranked[0], ranked[1]
        raw = score - (margin if best == self.default else 0.0)
        return self._decision(best, f"{kind} {raw:.3f} +{score - runner_up:.3f} over {second}", raw, start)

    def _by_weights(self, fitting: Sequence[Card], sims: Mapping[str, float],
                    latency_ms: Mapping[str, float], w: Weights, start: float) -> Decision:
        quality = _spread(sims, lower_is_better=False)
        known = {c.id: latency_ms[c.id] for c in fitting if c.id in latency_ms}
        fill = statistics.median(known.values()) if known else 0.0
        latency = _spread({c.id: known.get(c.id, fill) for c in fitting}, lower_is_better=True)
        cost = _spread({c.id: c.price_per_mtok or 0.0 for c in fitting}, lower_is_better=True)
        total = w.quality + w.latency + w.cost
        scores = {c.id: (w.quality * quality[c.id] + w.latency * latency[c.id] + w.cost * cost[c.id]) / total
                  for c in fitting}
        best = max(scores, key=lambda k: (scores[k], sims[k]))
        reason = f"score {scores[best]:.2f} (q {quality[best]:.2f} l {latency[best]:.2f} c {cost[best]:.2f})"
        return self._decision(best, reason, scores[best], start)

    def _elapsed_ms(self, start: float) -> float:
        return (self._clock() - start) * 1000

    def _decision(self, model: str, reason: str, score: float | None, start: float) -> Decision:
        return Decision(model, reason, score, False, self._elapsed_ms(start))

    def _default(self, reason: str, start: float) -> Decision:
        return Decision(self.default, reason, None, True, self._elapsed_ms(start))
