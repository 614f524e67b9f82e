"""Legacy completions on the chat path without sockets: a text backend gets the client's body
and its answer is passed back; a fallback that speaks only chat gets the chat body; token-id
prompts are refused by a chat backend; the record reads a text answer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from appliance.domain.chat_request import ChatRequest
from appliance.domain.errors import InvalidRequest
from appliance.domain.legacy_text import LegacyText
from appliance.domain.ports import Capabilities, UpstreamReply
from appliance.domain.routing import ModelEntry
from tests.unit.chat_fakes import FakeBackend
from tests.unit.test_attempts import down, setup

TEXT = {"id": "cmpl-1", "object": "text_completion", "model": "up",
        "choices": [{"index": 0, "text": "once more", "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}}


class TextBackend(FakeBackend):
    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(name, capabilities=Capabilities(completions=True), **kw)
        self.texts: list[Mapping[str, Any]] = []

    async def complete_text(self, payload: Mapping[str, Any]) -> UpstreamReply:
        self.texts.append(payload)
        if self.fail:
            raise self.fail.pop(0)
        return UpstreamReply(orjson.loads(orjson.dumps(TEXT)))


def legacy(model: str, prompt: Any = "once") -> ChatRequest:
    text = LegacyText({"model": model, "prompt": prompt, "echo": True},
                      (prompt,) if isinstance(prompt, str) else (),
                      None if isinstance(prompt, str) else "prompts given as token ids need a backend with /v1/completions")
    return ChatRequest({"model": model, "messages": [{"role": "user", "content": "once"}]}, model, False, "cid", text=text)


async def ask(chat: Any, req: ChatRequest) -> Any:
    plan = await chat.plan(req)
    return await chat.complete(req, plan), plan


def test_a_text_backend_gets_the_clients_body_and_its_answer_passes_back() -> None:
    text = TextBackend("t")
    chat, outcomes, _ = setup([ModelEntry("m", ("t",), "up")], text)
    reply, plan = asyncio.run(ask(chat, legacy("m")))
    assert plan.text_answer and text.texts == [{"model": "up", "prompt": "once", "echo": True}] and not text.calls
    assert reply.body["object"] == "text_completion" and reply.body["model"] == "m"
    assert outcomes.chats[0].response_text == "once more" and outcomes.chats[0].usage.completion_tokens == 2


def test_a_chat_only_fallback_gets_the_chat_body() -> None:
    text, chat_only = TextBackend("t", fail=[down("t")]), FakeBackend("c")
    chat, _, _ = setup([ModelEntry("m", ("t",), "up", fallbacks=("n",)), ModelEntry("n", ("c",), "other")],
                       text, chat_only)
    reply, plan = asyncio.run(ask(chat, legacy("m")))
    assert not plan.text_answer and plan.fallback_from == "m"
    assert chat_only.calls[0]["messages"] == [{"role": "user", "content": "once"}] and "prompt" not in chat_only.calls[0]
    assert reply.body["choices"][0]["message"]["content"] == "hi"


def test_token_ids_are_refused_by_a_chat_backend() -> None:
    chat, _, _ = setup([ModelEntry("m", ("c",), "up")], FakeBackend("c"))
    with pytest.raises(InvalidRequest, match="token ids"):
        asyncio.run(ask(chat, legacy("m", [1, 2])))
