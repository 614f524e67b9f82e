"""Whether the model should think: said by Anthropic's `thinking` or Ollama's `think`, told to
each backend in the field it reads."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.backends.capabilities import capabilities_of
from appliance.catalog import BackendConfig
from appliance.domain.thinking import thinking_fields
from appliance.wire.errors import WireError
from appliance.wire.thinking import anthropic_thinking, ollama_think


@pytest.mark.parametrize(("value", "wish"), [
    (None, None),
    ({"type": "disabled"}, {"on": False, "effort": None}),
    ({"type": "enabled", "budget_tokens": 1024}, {"on": True, "effort": "low"}),
    ({"type": "enabled", "budget_tokens": 8000}, {"on": True, "effort": "medium"}),
    ({"type": "enabled", "budget_tokens": 32000}, {"on": True, "effort": "high"}),
])
def test_anthropic_thinking_becomes_a_wish(value: Any, wish: Any) -> None:
    assert anthropic_thinking(value) == wish


@pytest.mark.parametrize(("value", "wish"), [
    (None, None), (True, {"on": True, "effort": None}), (False, {"on": False, "effort": None}),
    ("high", {"on": True, "effort": "high"}),
])
def test_ollama_think_becomes_a_wish(value: Any, wish: Any) -> None:
    assert ollama_think(value) == wish


@pytest.mark.parametrize("value", [True, "on", {"type": "maybe"}, {"type": "enabled"},
                                   {"type": "enabled", "budget_tokens": "1024"}, {"type": "enabled", "budget_tokens": 0}])
def test_a_bad_anthropic_thinking_is_a_400_naming_the_field(value: Any) -> None:
    with pytest.raises(WireError) as bad:
        anthropic_thinking(value)
    assert (bad.value.param or "").startswith("thinking")


@pytest.mark.parametrize("value", ["max", 1, {"on": True}])
def test_a_bad_ollama_think_is_a_400_naming_the_field(value: Any) -> None:
    with pytest.raises(WireError) as bad:
        ollama_think(value)
    assert bad.value.param == "think"


def test_each_kind_is_told_in_its_own_field() -> None:
    off, high = {"on": False, "effort": None}, {"on": True, "effort": "high"}

    def fields(kind: str, wish: dict[str, Any], payload: dict[str, Any] | None = None) -> dict[str, Any]:
        backend = BackendConfig.model_validate({"name": "b", "kind": kind, "base_url": "http://127.0.0.1:1/v1"})
        mode = capabilities_of(backend).thinking
        return thinking_fields(wish, mode, payload or {})

    assert fields("vllm", off) == fields("llamacpp", off) == {"chat_template_kwargs": {"enable_thinking": False}}
    # what the client sent in chat_template_kwargs stays
    assert fields("vllm", high, {"chat_template_kwargs": {"preserve_thinking": True}}) == {
        "chat_template_kwargs": {"preserve_thinking": True, "enable_thinking": True}}
    assert fields("ollama", off) == fields("lmstudio", off) == {"reasoning_effort": "none"}
    assert fields("ollama", {"on": True, "effort": None}) == {"reasoning_effort": "medium"}
    assert fields("openai", high) == {"reasoning_effort": "high"}
    assert fields("openai", off) == {} and fields("openai", {"on": True, "effort": None}) == {}


def test_the_catalog_overrides_the_kind() -> None:
    backend = BackendConfig.model_validate({"name": "b", "kind": "openai", "base_url": "http://127.0.0.1:1/v1",
                                            "capabilities": {"thinking": "chat_template_kwargs"}})
    assert capabilities_of(backend).thinking == "chat_template_kwargs"
    assert thinking_fields({"on": True, "effort": None}, "none", {}) == {}
