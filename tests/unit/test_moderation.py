"""Guard verdicts read and mapped onto OpenAI's categories; screening over a scripted chat-only
backend (ShieldGemma through chat, one question per policy); the catalog's moderation checks;
the legacy completions body checked and its chat answers written back."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from appliance.catalog import Catalog
from appliance.domain.attempts import Walk
from appliance.domain.errors import ContentFiltered, DependencyUnavailable
from appliance.domain.guard_prompts import (
    CATEGORIES,
    LLAMA_GUARD_3,
    SHIELDGEMMA,
    UnreadableVerdict,
    read_llama_guard,
    read_shieldgemma,
)
from appliance.domain.moderation import Moderation
from appliance.domain.ports import Capabilities, UpstreamReply
from appliance.domain.routing import ModelEntry, ModelRouter
from appliance.domain.upstreams import Upstreams
from appliance.openai import moderations
from appliance.openai.completions import parse_completions, text_completion
from appliance.wire.errors import WireError


def test_llama_guard_verdicts() -> None:
    assert not read_llama_guard("safe").flagged
    verdict = read_llama_guard("\nunsafe\nS1, s10\n")
    assert verdict.flagged and verdict.codes == ("S1", "S10")
    assert verdict.categories == {"violence", "illicit", "illicit/violent", "hate"}
    assert read_llama_guard("unsafe\nS7").categories == frozenset()  # flagged, no OpenAI name
    with pytest.raises(UnreadableVerdict):
        read_llama_guard("I cannot help with that")


def test_every_mapped_name_is_an_openai_category() -> None:
    names = {n for _, mapped in LLAMA_GUARD_3.values() for n in mapped} | {n for _, m in SHIELDGEMMA.values() for n in m}
    assert names <= set(CATEGORIES) and CATEGORIES == moderations.CATEGORIES


def test_shieldgemma_verdicts() -> None:
    verdict = read_shieldgemma({"harassment": "Yes. It threatens", "hate_speech": "No", "sexually_explicit": "no."})
    assert verdict.flagged and verdict.categories == {"harassment"} and verdict.codes == ("harassment",)
    with pytest.raises(UnreadableVerdict):
        read_shieldgemma({"harassment": "Maybe"})


class ChatGuard:
    """A chat-only backend answering ShieldGemma questions: Yes for the harassment policy."""

    name = "g"
    capabilities = Capabilities()

    def __init__(self, *, down: bool = False) -> None:
        self.asked: list[str] = []
        self.down = down

    async def complete(self, payload: Mapping[str, Any]) -> UpstreamReply:
        from appliance.domain.errors import BackendUnavailable

        if self.down:
            raise BackendUnavailable("down", backend="g")
        question = payload["messages"][0]["content"]
        self.asked.append(question)
        answer = "Yes" if "No Harassment" in question and "you idiot" in question else "No"
        return UpstreamReply({"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]})


def moderation(guard: ChatGuard) -> Moderation:
    backends: Any = {"g": guard}
    upstreams = Upstreams(backends)
    walk = Walk(backends, upstreams, dumps=orjson.dumps, bytes_per_token=2.5, clock=lambda: 0.0)
    router = ModelRouter([ModelEntry("guard", ("g",), "shieldgemma-2b")], [])
    return Moderation("guard", "shieldgemma", router, walk, upstreams, screened={"screened"})


def test_shieldgemma_screening_asks_each_policy_and_refuses_flagged_input() -> None:
    guard = ChatGuard()
    mod = moderation(guard)
    assert mod.applies({"screened", "x"}) and not mod.applies({"x"})
    asyncio.run(mod.screen([[{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}]], "c"))
    assert len(guard.asked) == len(SHIELDGEMMA) and all("Human Question: hello" in q for q in guard.asked)
    with pytest.raises(ContentFiltered) as err:
        asyncio.run(mod.screen([[{"role": "user", "content": [{"type": "text", "text": "you idiot"}]}]], "c"))
    assert err.value.categories == ["harassment"] and err.value.code == "content_filter"


def test_screening_fails_closed_when_the_guard_is_down() -> None:
    with pytest.raises(DependencyUnavailable) as err:
        asyncio.run(moderation(ChatGuard(down=True)).screen([[{"role": "user", "content": "hi"}]], "c"))
    assert err.value.code == "moderation_unavailable"


def test_catalog_checks_the_moderation_settings() -> None:
    backend = {"name": "b", "kind": "vllm", "base_url": "http://h:1/v1"}
    with pytest.raises(ValueError, match=r"moderations\.model"):
        Catalog.model_validate({"backends": [backend], "moderations": {"model": "nope"}})
    with pytest.raises(ValueError, match=r"models\[0\].moderate"):
        Catalog.model_validate({"backends": [backend], "models": [{"id": "m", "backend": "b", "moderate": "input"}]})
    ok = Catalog.model_validate({"backends": [backend], "models": [{"id": "g", "backend": "b"}],
                                 "moderations": {"model": "g", "format": "shieldgemma"}})
    assert ok.moderations is not None and ok.moderations.format == "shieldgemma"


def test_completions_body_checks_and_chat_answers_written_back() -> None:
    for bad in ({"model": "m"}, {"model": "m", "prompt": []}, {"model": "m", "prompt": [1, "a"]},
                {"model": "m", "prompt": "a", "n": 0}, {"model": "m", "prompt": "a", "stop": [1]}):
        with pytest.raises(WireError):
            parse_completions(bad)
    call = parse_completions({"model": "m", "prompt": ["a", "b"], "n": 2, "suffix": "z", "top_k": 5})
    assert call.chat_body(1) == {"top_k": 5, "n": 2, "model": "m", "messages": [{"role": "user", "content": "b"}]}
    assert call.warnings and "suffix" in call.warnings[0]
    answer = {"choices": [{"index": i, "message": {"content": f"x{i}"}, "finish_reason": "tool_calls"} for i in (0, 1)],
              "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    body = text_completion(call, [answer, answer], completion_id="cmpl-1", created=0)
    assert [(c["index"], c["text"], c["finish_reason"]) for c in body["choices"]] == [
        (0, "x0", "stop"), (1, "x1", "stop"), (2, "x0", "stop"), (3, "x1", "stop")]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    assert parse_completions({"model": "m", "prompt": [[1], [2]]}).token_prompts == 2
