"""KnowledgeService rules that need no database: fusion, composition, the empty question."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from appliance.domain.errors import DependencyUnavailable
from appliance.domain.knowledge import Hit, KnowledgeService, compose, fuse


class Unreachable:
    """A store or model that must not be called (any attribute access is a call)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected call: {name}")


def hit(doc: str, index: int = 0, **scores: float) -> Hit:
    return Hit(doc, index, f"text of {doc}#{index}", {}, dict(scores))


def test_fusion_rewards_agreement_and_keeps_each_lists_score() -> None:
    dense = [hit("a", dense=0.9), hit("b", dense=0.8), hit("c", dense=0.7)]
    text = [hit("c", text=0.5), hit("b", text=0.4), hit("d", text=0.3)]
    fused = fuse([dense, text], ["dense", "text"])
    assert {h.document_id for h in fused[:2]} == {"b", "c"}  # in both lists beats first in one
    b = next(h for h in fused if h.document_id == "b")
    assert b.scores == {"dense": 0.8, "text": 0.4, "rrf": pytest.approx(2 / 62)}
    assert {h.document_id for h in fused} == {"a", "b", "c", "d"}


def test_composition_numbers_passages_and_cites_each_document_once() -> None:
    ctx = compose([hit("a", 0), hit("b", 0), hit("a", 1)])
    assert "[1] (a) text of a#0" in ctx.system_message and "[3] (a) text of a#1" in ctx.system_message
    assert ctx.sources == ("a", "b")


async def test_a_question_without_text_retrieves_nothing() -> None:
    service = KnowledgeService(Unreachable(), Unreachable(), None, lambda text: [text])  # type: ignore[arg-type]
    ctx = await service.context_for("home", "   ", 5, "cid")
    assert ctx.sources == ()


class DownStore:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def text_search(self, workspace: str, query: str, k: int) -> list[Hit]:
        self.calls.append("text")
        raise DependencyUnavailable("PostgreSQL is unavailable")

    async def dense_search(self, workspace: str, vector: Sequence[float], k: int) -> list[Hit]:
        self.calls.append("dense")
        raise DependencyUnavailable("PostgreSQL is unavailable")


class OneVector:
    model_id = "one"
    dimensions = 1

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[1.0] for _ in texts]


async def test_hybrid_runs_both_legs_and_raises_the_store_error() -> None:
    store = DownStore()
    service = KnowledgeService(store, OneVector(), None, lambda text: [text])  # type: ignore[arg-type]
    with pytest.raises(DependencyUnavailable):
        await service.search("home", "heat pump", top_k=3, mode="hybrid")
    assert sorted(store.calls) == ["dense", "text"]
