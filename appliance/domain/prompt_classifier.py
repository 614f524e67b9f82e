"""A router that learns from labelled prompts (`[[routers]] training`): a linear classifier
over the prompt encoder's vectors, in place of the cards' similarities.

The cards are all a catalog must give, and on prompts never seen they route ~93% right
(docs/routing.md); a few hundred labelled prompts route ~98% right. Training needs numpy,
so it is a port (`PromptTrainer`, inference/prompt_trainer.py); the model it returns is a
matrix small enough to apply here in plain Python: three classes of 896 weights, ~0.2 ms.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LinearModel:
    """Multinomial logistic regression: a row of weights and a bias per class."""

    classes: tuple[str, ...]
    weights: tuple[tuple[float, ...], ...]
    biases: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.classes or len(self.weights) != len(self.classes) or len(self.biases) != len(self.classes):
            raise ValueError("a linear model needs one row of weights and one bias per class")
        if len({len(row) for row in self.weights}) != 1:
            raise ValueError("a linear model's rows differ in length")

    @property
    def dimensions(self) -> int:
        return len(self.weights[0])

    def probabilities(self, vector: Sequence[float], among: Sequence[str]) -> dict[str, float]:
        """Softmax over the logits of the classes in `among` (the candidates that fit)."""
        if len(vector) != self.dimensions:
            raise ValueError("prompt vector and model differ in length")
        logits = {c: sum(map(operator.mul, row, vector)) + bias
                  for c, row, bias in zip(self.classes, self.weights, self.biases, strict=True) if c in among}
        if not logits:
            raise ValueError("no candidate is one of the model's classes")
        top = max(logits.values())
        exps = {c: math.exp(v - top) for c, v in logits.items()}
        total = sum(exps.values())
        return {c: e / total for c, e in exps.items()}


class PromptTrainer(Protocol):
    @property
    def recipe(self) -> str:
        """The method and its settings: a model kept from another recipe is not reused."""
        ...

    async def fit(self, vectors: Sequence[Sequence[float]], labels: Sequence[str]) -> LinearModel:
        """A model that predicts `labels` from `vectors` (one label per vector)."""
        ...


class LearntModels(Protocol):
    """Fitted classifiers kept between starts, by a key naming everything they came from: a
    router learning from hundreds of prompts embeds and fits them once, not at every start."""

    async def get(self, key: str) -> LinearModel | None:
        """The model kept under `key`, or None (none kept, or it cannot be read)."""
        ...

    async def put(self, key: str, model: LinearModel) -> None:
        """Keep `model` under `key`; a failure to keep it is not the caller's."""
        ...
