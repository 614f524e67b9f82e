"""`SemanticRouter` with a fake encoder: selection, margin, fit filters, weights, fail-open."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import pytest

from appliance.domain.semantic_router import Card, Decision, SemanticRouter, Weights

# Three orthogonal "topics"; a text's vector is the normalised sum of the topics its words name.
TOPICS = {"code": (1.0, 0.0, 0.0), "math": (0.0, 1.0, 0.0), "chat": (0.0, 0.0, 1.0)}


def topic_vector(text: str) -> list[float]:
    v = [0.0, 0.0, 0.0]
    for word in text.lower().split():
        for i, x in enumerate(TOPICS.get(word.strip(".,?!"), (0.0, 0.0, 0.0))):
            v[i] += x
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


class FakeEncoder:
    model_id = "fake-topics"

    def __init__(self, *, fail: BaseException | None = None, delay_s: float = 0.0) -> None:
        self.fail = fail
        self.delay_s = delay_s
        self.calls: list[list[str]] = []   # prompts
        self.cards: list[list[str]] = []

    async def encode(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return [topic_vector(t) for t in texts]

    async def encode_cards(self, texts: Sequence[str]) -> list[list[float]]:
        self.cards.append(list(texts))
        if self.fail is not None:
            raise self.fail
        return [topic_vector(t) for t in texts]


class StepClock:
    """Advances by `step_s` on every read: each `choose` reads it at start, before and after
    the encoder, so elapsed time is deterministic."""

    def __init__(self, step_s: float) -> None:
        self.now = 0.0
        self.step_s = step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


CARDS = [
    Card("coder", "code code", ("fix this code",), context_length=1000, price_per_mtok=0.0),
    Card("reasoner", "math", ("prove this math",), context_length=100_000, price_per_mtok=3.0),
    Card("general", "chat", ("chat with me",), context_length=500, price_per_mtok=0.2),
]


async def router(encoder: FakeEncoder | None = None, *, budget_ms: float = 50.0, **kw: Any) -> SemanticRouter:
    r = SemanticRouter("auto", CARDS, "general", encoder or FakeEncoder(), budget_ms=budget_ms, **kw)
    await r.prepare()
    return r


async def test_prepare_embeds_every_card_text_in_one_call_and_choose_picks_the_closest() -> None:
    enc = FakeEncoder()
    r = await router(enc)
    # the cards are read as cards (whole), not as prompts (a bounded slice, within the budget)
    assert enc.cards == [["code code", "fix this code", "math", "prove this math", "chat", "chat with me"]]
    assert enc.calls == []
    d = await r.choose("please review my code")
    assert isinstance(d, Decision)
    assert (d.model, d.defaulted) == ("coder", False)
    assert d.score == pytest.approx(1.0)
    assert d.reason.startswith("cos 1.000 +") and d.reason.endswith("over reasoner")
    assert d.elapsed_ms >= 0
    assert (await r.choose("a math question")).model == "reasoner"
    assert (await r.choose("just chat")).model == "general"


async def test_the_default_keeps_a_near_tie_within_the_margin() -> None:
    plain = await router()
    assert (await plain.choose("code chat")).model in {"coder", "general"}   # an exact tie
    tilted = await router(margin=0.05)
    d = await tilted.choose("code code code chat chat")   # cos .83 coder, .55 general
    assert d.model == "coder"
    d = await tilted.choose("code chat")                  # cos .71 each: the default wins
    assert d.model == "general" and not d.defaulted


async def test_a_card_that_does_not_fit_the_prompt_is_not_a_candidate() -> None:
    r = await router()
    assert (await r.choose("my code", prompt_tokens=900)).model == "coder"
    d = await r.choose("my code", prompt_tokens=5000)     # beyond coder's 1000 and general's 500
    assert (d.model, d.reason, d.defaulted) == ("reasoner", "only candidate that fits", False)
    d = await r.choose("my code", prompt_tokens=1_000_000)
    assert (d.model, d.defaulted) == ("general", True) and d.reason == "default: no candidate fits"


async def test_max_cost_excludes_expensive_cards() -> None:
    r = await router(max_cost_per_mtok=0.5)
    d = await r.choose("prove this math")
    assert d.model != "reasoner" and not d.defaulted


async def test_weights_trade_similarity_against_latency_and_price() -> None:
    # quality alone: the most similar
    r = await router(weights={"quality": 1.0})
    assert (await r.choose("math")).model == "reasoner"
    # price dominates: reasoner costs most, coder nothing
    r = await router(weights=Weights(quality=0.1, latency=0.0, cost=0.9))
    d = await r.choose("math")
    assert d.model == "coder" and d.score is not None and d.reason.startswith("score ")
    # latency dominates: the fastest measured one; an unknown latency counts as the median
    r = await router(weights={"quality": 0.2, "latency": 0.8})
    d = await r.choose("math", latency_ms={"coder": 900.0, "reasoner": 800.0, "general": 100.0})
    assert d.model == "general"
    d = await r.choose("math", latency_ms={"coder": 900.0, "general": 100.0})
    assert d.model == "general"


def test_weights_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown router weight 'speed'"):
        Weights.from_mapping({"speed": 1.0})
    with pytest.raises(ValueError, match="not all 0"):
        Weights(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="twice"):
        SemanticRouter("r", [CARDS[0], CARDS[0]], "coder", FakeEncoder(), budget_ms=5)


async def test_an_encoder_error_returns_the_default_and_never_raises() -> None:
    enc = FakeEncoder()
    r = await router(enc)
    enc.fail = RuntimeError("model exploded")
    d = await r.choose("fix my code")
    assert (d.model, d.defaulted, d.score) == ("general", True, None)
    assert d.reason == "default: RuntimeError"


async def test_a_wrong_shape_from_the_encoder_returns_the_default() -> None:
    class Short(FakeEncoder):
        async def encode(self, texts: Sequence[str]) -> list[list[float]]:
            return [[1.0, 0.0]]

    r = await router(Short())
    d = await r.choose("fix my code")
    assert d.defaulted and d.reason == "default: ValueError"


async def test_a_slow_encoder_is_abandoned_at_the_budget() -> None:
    enc = FakeEncoder()
    r = await router(enc, budget_ms=20.0)
    enc.delay_s = 1.0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    d = await r.choose("fix my code")
    assert loop.time() - t0 < 0.5
    assert d.defaulted and d.model == "general" and d.reason.startswith("default: over budget")


async def test_a_result_that_arrives_past_the_budget_is_not_used() -> None:
    # An inline (non-yielding) encoder cannot be interrupted; its result is checked instead.
    r = SemanticRouter("auto", CARDS, "general", FakeEncoder(), budget_ms=10.0, clock=StepClock(0.006))
    await r.prepare()
    d = await r.choose("fix my code")     # clock reads: start, before the encoder (6 ms), after (12 ms)
    assert d.defaulted and "over budget" in d.reason and "> 10 ms" in d.reason


async def test_cancellation_is_not_swallowed() -> None:
    enc = FakeEncoder()
    r = await router(enc)
    enc.delay_s = 10.0
    task = asyncio.ensure_future(r.choose("fix my code"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_unprepared_or_empty_prompt_defaults_without_calling_the_encoder() -> None:
    enc = FakeEncoder()
    r = SemanticRouter("auto", CARDS, "general", enc, budget_ms=10.0)
    d = await r.choose("fix my code")
    assert d.defaulted and d.reason == "default: not prepared" and enc.calls == []
    await r.prepare()
    d = await r.choose("   ")
    assert d.defaulted and d.reason == "default: empty prompt" and enc.calls == [] and len(enc.cards) == 1


async def test_prepare_fails_loudly_on_an_empty_card_or_a_broken_encoder() -> None:
    with pytest.raises(ValueError, match="no description or examples"):
        await SemanticRouter("r", [Card("x", " ")], "x", FakeEncoder(), budget_ms=5).prepare()
    with pytest.raises(RuntimeError):
        await SemanticRouter("r", CARDS, "general", FakeEncoder(fail=RuntimeError("down")),
                             budget_ms=5).prepare()
