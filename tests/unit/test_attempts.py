"""Resilient routing without sockets: fallbacks, replicas, breakers and context length."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appliance.api.errors import status_of
from appliance.domain.breaker import State
from appliance.domain.chat import ChatService
from appliance.domain.chat_request import ChatRequest
from appliance.domain.errors import (
    BackendRejected,
    BackendsResting,
    BackendTimeout,
    BackendUnavailable,
    InvalidRequest,
)
from appliance.domain.models import ModelDirectory
from appliance.domain.ports import Capabilities
from appliance.domain.routing import ModelEntry, ModelRouter
from appliance.domain.upstreams import BreakerPolicy, Upstreams
from tests.unit.chat_fakes import Codec, FakeBackend, Outcomes


def down(name: str) -> BackendUnavailable:
    return BackendUnavailable(f"backend {name} is unreachable", backend=name)


def setup(entries: list[ModelEntry], *backends: FakeBackend, failures: int = 3,
          cooldown: float = 30.0) -> tuple[ChatService, Outcomes, Upstreams]:
    by_name = {b.name: b for b in backends}
    router = ModelRouter(entries, [])
    upstreams = Upstreams(by_name, BreakerPolicy(failures, cooldown, 300.0))
    outcomes = Outcomes()
    chat = ChatService(router, by_name, ModelDirectory(router, by_name, ttl_s=60), Codec(), status_of=status_of,
                       upstreams=upstreams, recorder=outcomes)
    return chat, outcomes, upstreams


def request(model: str, text: str = "hi", **body: Any) -> ChatRequest:
    return ChatRequest({"model": model, "messages": [{"role": "user", "content": text}], **body}, model, False, "cid")


async def answer(chat: ChatService, req: ChatRequest) -> Any:
    plan = await chat.plan(req)
    reply = await chat.complete(req, plan)
    return reply, plan


CODER = ModelEntry("coder", ("a",), "qwen-coder", fallbacks=("general",))
GENERAL = ModelEntry("general", ("b",), "llama-general")


async def test_a_model_whose_backend_fails_before_the_first_byte_falls_back() -> None:
    a, b = FakeBackend("a", fail=[down("a")]), FakeBackend("b")
    chat, outcomes, _ = setup([CODER, GENERAL], a, b)
    reply, plan = await answer(chat, request("coder"))
    assert reply.body["model"] == "coder"                       # the client's name stays
    assert b.calls[0]["model"] == "llama-general"               # the fallback gets its own name
    assert (plan.fallback_from, plan.target.model_id, plan.backend) == ("coder", "general", "b")
    [outcome] = outcomes.chats
    assert outcome.status == 200 and outcome.backend == "b"
    assert outcome.routing == {"fallback": {"from": "coder", "to": "general"}}


@pytest.mark.parametrize("failure", [BackendTimeout("slow", backend="a"),
                                     BackendRejected("busy", status=429, backend="a", retry_after="7")])
async def test_timeouts_and_429s_fall_back_too(failure: Exception) -> None:
    chat, _, upstreams = setup([CODER, GENERAL], FakeBackend("a", fail=[failure]), FakeBackend("b"), cooldown=2)
    _, plan = await answer(chat, request("coder"))
    assert plan.backend == "b"
    if isinstance(failure, BackendRejected):  # its Retry-After opens the breaker at once, for that long
        assert upstreams.breakers["a"].state is State.OPEN and 6.5 < upstreams.breakers["a"].retry_in() <= 7


async def test_the_backends_own_refusal_is_the_answer_not_a_reason_to_fall_back() -> None:
    b = FakeBackend("b")
    chat, outcomes, _ = setup([CODER, GENERAL], FakeBackend("a", fail=[BackendRejected("bad", status=400, backend="a")]), b)
    with pytest.raises(BackendRejected):
        await answer(chat, request("coder"))
    assert b.calls == [] and outcomes.chats[0].status == 400


async def test_replicas_take_the_least_busy_and_a_failed_one_is_retried_on_another() -> None:
    entry = ModelEntry("m", ("r1", "r2"), "m")
    r1, r2 = FakeBackend("r1", delay=0.05), FakeBackend("r2", delay=0.05)
    chat, _, _ = setup([entry], r1, r2)
    await asyncio.gather(*(answer(chat, request("m")) for _ in range(10)))
    assert len(r1.calls) == len(r2.calls) == 5                   # least outstanding balances them
    r1.fail, r1.delay, r2.delay = [down("r1")], 0.0, 0.0
    r1.calls, r2.calls = [], []
    _, plan = await answer(chat, request("m"))
    assert plan.backend == "r2" and plan.fallback_from is None and len(r1.calls) == 1


async def test_a_replica_with_the_model_loaded_is_preferred() -> None:
    entry = ModelEntry("m", ("r1", "r2"), "qwen3:8b")
    chat, _, upstreams = setup([entry], FakeBackend("r1"), FakeBackend("r2"))
    upstreams.set_loaded("r1", frozenset({"other"}))
    upstreams.set_loaded("r2", frozenset({"qwen3:8b"}))
    for _ in range(3):
        _, plan = await answer(chat, request("m"))
        assert plan.backend == "r2"


async def test_a_breaker_opens_after_n_failures_skips_at_no_cost_then_probes_and_recovers() -> None:
    clock = [0.0]
    a, b = FakeBackend("a", fail=[down("a")] * 3), FakeBackend("b")
    chat, _, upstreams = setup([CODER, GENERAL], a, b, failures=3, cooldown=10)
    for breaker in upstreams.breakers.values():
        breaker._clock = lambda: clock[0]
    for _ in range(3):
        await answer(chat, request("coder"))
    assert upstreams.breakers["a"].state is State.OPEN
    a.calls.clear()
    _, plan = await answer(chat, request("coder"))
    assert a.calls == [] and plan.backend == "b"                 # skipped: no call, no timeout
    clock[0] += 10                                              # cool-down over: one probe goes to a
    _, plan = await answer(chat, request("coder"))
    assert len(a.calls) == 1 and plan.backend == "a" and upstreams.breakers["a"].state is State.CLOSED


async def test_every_backend_resting_is_a_503_with_retry_after() -> None:
    chat, _, upstreams = setup([ModelEntry("m", ("a",), "m")], FakeBackend("a"), failures=1, cooldown=30)
    upstreams.failed("a")
    with pytest.raises(BackendsResting) as err:
        await answer(chat, request("m"))
    assert err.value.retry_after == "30" and "is taking requests now" in err.value.message


SMALL = ModelEntry("small", ("a",), "small", context_length=100, fallbacks=("big",))
BIG = ModelEntry("big", ("b",), "big", context_length=100_000)


async def test_a_prompt_that_does_not_fit_goes_to_a_fallback_that_fits() -> None:
    a, b = FakeBackend("a"), FakeBackend("b")
    chat, _, _ = setup([SMALL, BIG], a, b)
    _, plan = await answer(chat, request("small", "word " * 400))
    assert plan.target.model_id == "big" and a.calls == []


async def test_the_backends_tokenizer_overrules_the_estimate() -> None:
    a = FakeBackend("a", tokens=60, capabilities=Capabilities(tokenize=True))
    chat, _, _ = setup([SMALL, BIG], a, FakeBackend("b"))
    _, plan = await answer(chat, request("small", "x " * 200))   # estimated over 100, counted 60
    assert plan.target.model_id == "small"


async def test_a_prompt_that_fits_nothing_is_a_400_when_counted_and_tried_when_only_estimated() -> None:
    counted = ModelEntry("c", ("a",), "c", context_length=10)
    chat, _, _ = setup([counted], FakeBackend("a", tokens=500, capabilities=Capabilities(tokenize=True)))
    with pytest.raises(InvalidRequest) as err:
        await answer(chat, request("c", "word " * 100))
    assert err.value.code == "context_length_exceeded"
    guessed = ModelEntry("g", ("b",), "g", context_length=10)
    chat, _, _ = setup([guessed], FakeBackend("b"))
    _, plan = await answer(chat, request("g", "word " * 100))
    assert plan.backend == "b"
