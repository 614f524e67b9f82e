"""ChatService without sockets: capabilities decided once and applied in planning for every
dialect, and every way a call can end recorded with an honest status."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appliance.api.errors import status_of
from appliance.backends.capabilities import capabilities_of
from appliance.catalog import BackendConfig, CapabilitiesConfig
from appliance.domain.chat import ChatService
from appliance.domain.chat_request import ChatRequest
from appliance.domain.errors import BackendTimeout
from appliance.domain.models import ModelDirectory
from appliance.domain.ports import Capabilities
from appliance.domain.routing import ModelRouter, RouteRule
from tests.unit.chat_fakes import Codec, FakeBackend, Outcomes


def service(*backends: FakeBackend) -> tuple[ChatService, Outcomes]:
    by_name = {b.name: b for b in backends}
    router = ModelRouter([], [RouteRule(f"{b.name}-*", b.name) for b in backends])
    outcomes = Outcomes()
    chat = ChatService(router, by_name, ModelDirectory(router, by_name, ttl_s=60), Codec(),
                       status_of=status_of, recorder=outcomes)
    return chat, outcomes


def request(model: str, **extensions: Any) -> ChatRequest:
    return ChatRequest({"model": model, "messages": [{"role": "user", "content": "hi"}]}, model, False, "cid",
                       extensions=extensions)


def kind(name: str) -> Capabilities:
    return capabilities_of(BackendConfig(name="b", kind=name, base_url="http://h/v1"))  # type: ignore[arg-type]


@pytest.mark.parametrize(("backend_kind", "sent"), [("vllm", True), ("llamacpp", True), ("lmstudio", True),
                                                     ("ollama", True), ("openai", False)])
async def test_extension_fields_reach_only_backends_that_take_them(backend_kind: str, sent: bool) -> None:
    backend = FakeBackend("b", capabilities=kind(backend_kind))
    chat, _ = service(backend)
    req = request("b-model", top_k=40, min_p=0.05)
    await chat.complete(req, await chat.plan(req))
    [payload] = backend.calls
    assert ("top_k" in payload and "min_p" in payload) is sent
    assert payload["messages"] == [{"role": "user", "content": "hi"}]


def test_capabilities_by_kind_and_overridden_in_the_catalog() -> None:
    assert not kind("llamacpp").fetches_image_urls and kind("vllm").fetches_image_urls
    assert kind("vllm").tokenize and not kind("openai").completions
    strict = capabilities_of(BackendConfig(name="b", kind="vllm", base_url="http://h/v1",
                                           capabilities=CapabilitiesConfig(extension_fields=(), tokenize=False)))
    assert strict.extension_fields == frozenset() and not strict.tokenize and strict.completions


async def test_a_completed_call_is_recorded_as_200() -> None:
    chat, outcomes = service(FakeBackend("b", capabilities=kind("vllm")))
    req = request("b-model")
    reply = await chat.complete(req, await chat.plan(req))
    assert reply.body["model"] == "b-model"
    assert [(o.status, o.error) for o in outcomes.chats] == [(200, None)]


@pytest.mark.parametrize(("fail", "status", "error"), [
    (BackendTimeout("backend b did not answer in time", backend="b"), 504, "backend b did not answer in time"),
    (TypeError("unhashable type"), 500, "internal error: TypeError"),
    (asyncio.CancelledError(), 499, "client disconnected"),
])
async def test_a_failed_call_is_recorded_with_its_status(fail: BaseException, status: int, error: str) -> None:
    chat, outcomes = service(FakeBackend("b", capabilities=kind("vllm"), fail=[fail]))
    req = request("b-model")
    plan = await chat.plan(req)
    with pytest.raises(type(fail)):
        await chat.complete(req, plan)
    assert [(o.status, o.error) for o in outcomes.chats] == [(status, error)]
