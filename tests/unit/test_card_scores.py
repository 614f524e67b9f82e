"""`CardIndex`: a card's nearest texts per encoder block, weighted by the prompt's share of
each block, against the centroid; and `SemanticRouter` using it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from appliance.domain.card_scores import Block, CardIndex
from appliance.domain.semantic_router import Card, SemanticRouter


def axis(i: int, dims: int = 6) -> list[float]:
    return [1.0 if k == i else 0.0 for k in range(dims)]


def mix(*parts: tuple[float, list[float]]) -> list[float]:
    v = [sum(w * p[k] for w, p in parts) for k in range(len(parts[0][1]))]
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def two_blocks(gate: float, first: list[float], second: list[float]) -> list[float]:
    """What the router's encoder makes: [sqrt(g) * a ; sqrt(1 - g) * b], a and b unit vectors."""
    return [math.sqrt(gate) * x for x in first] + [math.sqrt(1.0 - gate) * x for x in second]


TWO_SENTENCE_BLOCKS = (Block(3), Block(3))

# A card whose texts are several kinds of request (one of them exactly the prompt), against a
# card whose texts are all somewhat like it.
MIXED = {"general": [axis(0), axis(1), axis(2)],
         "reasoner": [mix((0.8, axis(0)), (0.6, axis(3)))] * 3}


def test_the_nearest_text_wins_where_the_centroid_blurs() -> None:
    prompt = axis(0)
    centroid = CardIndex(MIXED, scoring="centroid").scores(prompt, ["general", "reasoner"])
    assert centroid["general"] == pytest.approx(1 / math.sqrt(3))
    assert centroid["reasoner"] == pytest.approx(0.8)
    nearest = CardIndex(MIXED, scoring="nearest", nearest=1).scores(prompt, ["general", "reasoner"])
    assert nearest == pytest.approx({"general": 1.0, "reasoner": 0.8})


def test_nearest_averages_the_k_closest_texts() -> None:
    scores = CardIndex(MIXED, nearest=2).scores(axis(0), ["general", "reasoner"])
    assert scores == pytest.approx({"general": 0.5, "reasoner": 0.8})   # (1 + 0) / 2 against (.8 + .8) / 2
    few = CardIndex({"a": [axis(0)], "b": [axis(1)]}, nearest=5).scores(axis(0), ["a", "b"])
    assert few == pytest.approx({"a": 1.0, "b": 0.0})                  # fewer texts than k: all of them


def test_blocks_are_scored_apart_and_weighted_by_the_prompts_share() -> None:
    # "code" is like the prompt in the first block (a sentence encoder), "chat" in the second
    # (a token bag); each card's texts are the same kind in both blocks otherwise.
    cards = {"code": [two_blocks(0.5, axis(0, 3), axis(1, 3))],
             "chat": [two_blocks(0.5, axis(1, 3), axis(0, 3))]}
    index = CardIndex(cards, nearest=1, blocks=TWO_SENTENCE_BLOCKS)
    leaning_first = index.scores(two_blocks(0.8, axis(0, 3), axis(0, 3)), ["code", "chat"])
    assert leaning_first == pytest.approx({"code": 0.8, "chat": 0.2})
    leaning_second = index.scores(two_blocks(0.2, axis(0, 3), axis(0, 3)), ["code", "chat"])
    assert leaning_second == pytest.approx({"code": 0.2, "chat": 0.8})
    # a prompt the first encoder could not read at all (a script it has no pieces for)
    unread = index.scores([0.0, 0.0, 0.0, *axis(0, 3)], ["code", "chat"])
    assert unread == pytest.approx({"code": 0.0, "chat": 1.0})
    # one block over the whole vector mixes them: no card matches on both halves at once
    whole = CardIndex(cards, nearest=1).scores(two_blocks(0.5, axis(0, 3), axis(0, 3)), ["code", "chat"])
    assert whole == pytest.approx({"code": 0.5, "chat": 0.5})


def test_each_block_finds_its_own_nearest_text() -> None:
    # text 1 matches the prompt in the first block only, text 2 in the second only
    cards = {"a": [two_blocks(0.5, axis(0, 3), axis(2, 3)), two_blocks(0.5, axis(2, 3), axis(0, 3))],
             "b": [two_blocks(0.5, axis(1, 3), axis(1, 3))]}
    scores = CardIndex(cards, nearest=1, blocks=TWO_SENTENCE_BLOCKS).scores(two_blocks(0.5, axis(0, 3), axis(0, 3)), ["a", "b"])
    assert scores == pytest.approx({"a": 1.0, "b": 0.0})


def test_a_token_bag_block_scores_the_cards_centroid_there() -> None:
    # the second block is a bag of token vectors: one short text's tokens say little alone
    cards = {"a": [two_blocks(0.5, axis(0, 3), axis(0, 3)), two_blocks(0.5, axis(1, 3), axis(1, 3))],
             "b": [two_blocks(0.5, axis(2, 3), axis(2, 3))]}
    index = CardIndex(cards, nearest=1, blocks=(Block(3), Block(3, nearest=False)))
    scores = index.scores(two_blocks(0.5, axis(0, 3), axis(0, 3)), ["a", "b"])
    # first block: a's nearest text, 1.0; second: a's centroid (e0 + e1) / sqrt 2
    assert scores == pytest.approx({"a": 0.5 * 1.0 + 0.5 / math.sqrt(2), "b": 0.0})
    bag_only = CardIndex(cards, blocks=(Block(6, nearest=False),)).scores(axis(0), ["a", "b"])
    assert bag_only["a"] == pytest.approx(CardIndex(cards, scoring="centroid").scores(axis(0), ["a"])["a"])


def test_a_card_text_empty_in_a_block_is_left_out_of_it() -> None:
    cards = {"a": [[0.0, 0.0, 0.0, *axis(0, 3)], two_blocks(0.5, axis(0, 3), axis(1, 3))],
             "b": [[0.0, 0.0, 0.0, *axis(0, 3)]]}
    index = CardIndex(cards, nearest=2, blocks=TWO_SENTENCE_BLOCKS)
    scores = index.scores(two_blocks(0.5, axis(0, 3), axis(0, 3)), ["a", "b"])
    # a: first block only its second text (1.0), second block mean(1, 0); b: nothing in the first block
    assert scores == pytest.approx({"a": 0.5 * 1.0 + 0.5 * 0.5, "b": 0.5 * 1.0})


def test_only_the_asked_cards_are_scored() -> None:
    assert set(CardIndex(MIXED).scores(axis(0), ["reasoner"])) == {"reasoner"}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"blocks": (Block(4), Block(4))}, "do not add up"),
    ({"blocks": (Block(6), Block(0))}, "do not add up"),
    ({"scoring": "knn"}, "unknown scoring"),
    ({"nearest": 0}, "nearest must be"),
])
def test_index_settings_are_checked(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CardIndex(MIXED, **kwargs)  # type: ignore[arg-type]


def test_bad_vectors_are_refused() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        CardIndex({"a": [axis(0)], "b": [axis(0, 4)]})
    with pytest.raises(ValueError, match="at least one vector"):
        CardIndex({"a": []})
    index = CardIndex(MIXED)
    with pytest.raises(ValueError, match="differ in length"):
        index.scores(axis(0, 4), ["general"])
    with pytest.raises(ValueError, match="zero vector"):
        index.scores([0.0] * 6, ["general"])


class TableEncoder:
    """Each known text has a fixed vector; anything else is axis 0."""

    model_id = "table"

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    async def encode(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.table.get(t, axis(0)) for t in texts]

    encode_cards = encode


# general's centroid is .789 like the prompt (axis 0), its two nearest texts .95; reasoner's .8
ROUTER_CARDS = [Card("general", "everyday", ("an email", "a recipe", "a fact")), Card("reasoner", "puzzles", ("a proof",))]
ROUTER_TABLE = {"everyday": axis(1), "an email": axis(2), "a recipe": axis(0),
                "a fact": mix((0.9, axis(0)), (math.sqrt(1 - 0.81), axis(5))),
                "puzzles": mix((0.8, axis(0)), (0.6, axis(3))), "a proof": mix((0.8, axis(0)), (0.6, axis(3)))}


async def test_the_router_scores_by_nearest_texts_by_default_and_can_use_centroids() -> None:
    nearest = SemanticRouter("auto", ROUTER_CARDS, "general", TableEncoder(ROUTER_TABLE), budget_ms=1000.0)
    await nearest.prepare()
    d = await nearest.choose("a recipe, please")    # axis 0: exactly general's "a recipe"
    assert (d.model, d.defaulted) == ("general", False)
    assert d.reason == "cos 0.950 +0.150 over reasoner"
    centroid = SemanticRouter("auto", ROUTER_CARDS, "general", TableEncoder(ROUTER_TABLE), budget_ms=1000.0,
                              scoring="centroid")
    await centroid.prepare()
    assert (await centroid.choose("a recipe, please")).model == "reasoner"


async def test_a_margin_per_block_weighs_the_default_lead_by_the_prompts_share() -> None:
    # The prompt is exactly "reasoner" in the second block, where the default's text has cosine
    # 0.96 to it; both cards are the same in the first. So reasoner leads by (1 - g) x 0.04.
    tokens = [0.96, math.sqrt(1 - 0.96 ** 2), 0.0]
    cards = [Card("general", "g"), Card("reasoner", "r")]

    async def decide(gate: float, margin: float | tuple[float, float]) -> str:
        table = {"g": two_blocks(0.5, axis(0, 3), axis(0, 3)), "r": two_blocks(0.5, axis(0, 3), tokens),
                 "p": two_blocks(gate, axis(0, 3), tokens)}
        router = SemanticRouter("auto", cards, "general", TableEncoder(table), budget_ms=1000.0,
                                margin=margin, blocks=TWO_SENTENCE_BLOCKS, nearest=1)
        await router.prepare()
        return (await router.choose("p")).model

    assert await decide(0.2, (0.08, 0.0)) == "reasoner"   # lead 0.8 x 0.04 = .032 over 0.2 x 0.08 = .016
    assert await decide(0.2, 0.045) == "general"          # one margin for both: .032 < .045
    assert await decide(0.8, (0.08, 0.0)) == "general"    # the sentence half's: .008 < .064
    with pytest.raises(ValueError, match="3 margins for an encoder of 2 blocks"):
        SemanticRouter("auto", cards, "general", TableEncoder({}), budget_ms=1000.0,
                       margin=(0.1, 0.0, 0.0), blocks=TWO_SENTENCE_BLOCKS)


async def test_wrong_blocks_fail_prepare_and_the_router_then_defaults() -> None:
    router = SemanticRouter("auto", ROUTER_CARDS, "general", TableEncoder(ROUTER_TABLE), budget_ms=1000.0,
                            blocks=(Block(512), Block(384, nearest=False)))
    with pytest.raises(ValueError, match="do not add up"):
        await router.prepare()
    d = await router.choose("a recipe, please")
    assert (d.model, d.defaulted, d.reason) == ("general", True, "default: not prepared")
    with pytest.raises(ValueError, match="unknown scoring"):
        SemanticRouter("auto", ROUTER_CARDS, "general", TableEncoder(ROUTER_TABLE), budget_ms=10.0,
                       scoring="best")  # type: ignore[arg-type]


def test_the_catalog_chooses_the_scoring_and_refuses_an_unknown_one() -> None:
    from pydantic import ValidationError

    from appliance.catalog import RouterConfig

    default = RouterConfig(id="auto", candidates=("a", "b"), default="a")
    assert (default.scoring, default.margin) == ("nearest", (0.08, 0.0))
    assert RouterConfig(id="auto", candidates=("a",), default="a", margin=0.03).margin == 0.03
    for bad in (-0.1, [0.1, 2.0], [0.1, 0.0, 0.0]):
        with pytest.raises(ValidationError, match="margin"):
            RouterConfig(id="auto", candidates=("a",), default="a", margin=bad)  # type: ignore[arg-type]
    assert RouterConfig(id="auto", candidates=("a",), default="a", scoring="centroid").scoring == "centroid"
    with pytest.raises(ValidationError, match="scoring"):
        RouterConfig(id="auto", candidates=("a",), default="a", scoring="knn")  # type: ignore[arg-type]
