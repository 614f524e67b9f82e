"""Planning full-text queries: rare lexemes find candidates, IDF weighs the score."""

from __future__ import annotations

from appliance.rag.text_query import NO_STATS, LexemeStats, plan, tsquery_literal

STATS = LexemeStats({"heat": 0.60, "pump": 0.20, "use": 0.90, "winter": 0.03}, floor=0.02, rows=100_000)


def test_without_statistics_every_lexeme_is_a_candidate_with_equal_weight() -> None:
    planned = plan(["pump", "heat", "pump"], NO_STATS, 1000)
    assert planned is not None
    assert planned.candidates == ("heat", "pump") and planned.weights == (1.0, 1.0, 1.0, 1.0)


def test_unlisted_lexemes_are_candidates_and_common_ones_only_within_the_budget() -> None:
    planned = plan(["heat", "pump", "use", "oakwifi"], STATS, budget_rows=1000)
    assert planned is not None
    assert planned.candidates == ("oakwifi",)  # pump alone would add 20,000 rows
    assert set(planned.lexemes) == {"heat", "pump", "use", "oakwifi"}  # all still score
    planned = plan(["heat", "pump", "winter"], STATS, budget_rows=25_000)
    assert planned is not None and planned.candidates == ("winter", "pump")


def test_the_rarest_lexeme_is_a_candidate_even_beyond_the_budget() -> None:
    planned = plan(["use", "heat"], STATS, budget_rows=10)
    assert planned is not None and planned.candidates == ("heat",)


def test_rarer_lexemes_weigh_more() -> None:
    planned = plan(["use", "pump", "oakwifi"], STATS, 1000)
    assert planned is not None
    a, b, c = planned.labelled
    assert "oakwifi" in a and "use" not in a + b + c  # the commonest stays at label D
    d_weight, *_, a_weight = planned.weights
    assert a_weight == 1.0 and 0 < d_weight < a_weight


def test_nothing_searchable_plans_nothing_and_literals_are_quoted() -> None:
    assert plan([], STATS, 1000) is None
    assert tsquery_literal(["o'brien", "a\\b", "x|y"]) == "'o''brien' | 'a\\\\b' | 'x|y'"
