"""Model routing: explicit entries, glob routes in order, discovered models, renames."""

from __future__ import annotations

import pytest

from appliance.domain.errors import ModelNotFound
from appliance.domain.routing import ModelEntry, ModelRouter, RouteRule


def router() -> ModelRouter:
    return ModelRouter(
        [ModelEntry("coder", ("vllm",), "qwen3-coder:30b"), ModelEntry("qwen3-special", ("ollama",), "qwen3-special")],
        [RouteRule("qwen3-*", "vllm"), RouteRule("qwen*", "ollama"), RouteRule("nemotron-*", "llamacpp")],
    )


def test_alias_is_renamed_upstream() -> None:
    target = router().resolve("coder")
    assert (target.backend, target.upstream_model, target.requested, target.renamed) == ("vllm", "qwen3-coder:30b", "coder", True)


def test_explicit_entry_beats_a_matching_pattern() -> None:
    assert router().resolve("qwen3-special").backend == "ollama"


def test_first_matching_pattern_wins_and_is_case_sensitive() -> None:
    r = router()
    assert r.resolve("qwen3-8b").backend == "vllm"
    assert r.resolve("qwen2.5-7b").backend == "ollama"
    assert r.resolve("nemotron-nano").backend == "llamacpp"
    assert r.find("Qwen3-8b") is None
    assert not r.resolve("qwen3-8b").renamed


def test_discovered_models_route_after_catalog_tiers() -> None:
    r = router()
    assert r.find("lfm2-1.2b") is None
    r.update_discovered({"lfm2-1.2b": "lmstudio", "qwen3-8b": "ollama"})
    assert r.resolve("lfm2-1.2b").backend == "lmstudio"
    assert r.resolve("qwen3-8b").backend == "vllm"  # the pattern still wins


def test_unknown_model_raises_model_not_found() -> None:
    with pytest.raises(ModelNotFound) as err:
        router().resolve("gpt-99")
    assert err.value.param == "model" and err.value.model == "gpt-99"


def test_cost_uses_per_million_token_prices() -> None:
    entry = ModelEntry("m", ("b",), "m", price_input_per_mtok=3.0, price_output_per_mtok=15.0)
    assert entry.cost(1_000_000, 100_000) == pytest.approx(4.5)
