"""The official `anthropic` client, unchanged, against the gateway's `/v1/messages`."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway

MESSAGES: Any = [{"role": "user", "content": "hello there"}]
TEXT = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"


def client(gw: Gateway, api_key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=api_key, max_retries=0)


def test_create_returns_text_usage_and_the_requested_model_name(gateway: Gateway, llm: FakeLLM) -> None:
    raw = client(gateway).messages.with_raw_response.create(model="coder", max_tokens=64, messages=MESSAGES)
    reply = raw.parse()
    assert reply.type == "message" and reply.role == "assistant"
    assert reply.model == "coder"
    assert [b.type for b in reply.content] == ["text"]
    assert reply.content[0].text == TEXT  # type: ignore[union-attr]
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens == 8
    assert raw.headers["x-appliance-backend"] == "local-vllm"
    sent = llm.requests()[-1]
    assert sent["model"] == "fake-model" and sent["max_tokens"] == 64
    assert sent["messages"] == [{"role": "user", "content": "hello there"}]


def test_system_prompt_and_sampling_reach_the_backend(gateway: Gateway, llm: FakeLLM) -> None:
    client(gateway).messages.create(
        model="qwen3-8b", max_tokens=10, system="You are terse.", messages=MESSAGES,
        stop_sequences=["END"], metadata={"user_id": "u-1"},
        extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 5})  # this client version has no sampling arguments
    sent = llm.requests()[-1]
    assert sent["messages"][0] == {"role": "system", "content": "You are terse."}
    assert sent["messages"][1] == {"role": "user", "content": "hello there"}
    assert sent["temperature"] == 0.2 and sent["top_p"] == 0.9
    assert sent["stop"] == ["END"] and sent["user"] == "u-1" and sent["top_k"] == 5


def test_thinking_is_told_to_the_backend_in_the_field_it_reads(gateway: Gateway, llm: FakeLLM) -> None:
    c = client(gateway)
    c.messages.create(model="qwen3-8b", max_tokens=10, messages=MESSAGES, thinking={"type": "disabled"})
    assert llm.requests()[-1]["chat_template_kwargs"] == {"enable_thinking": False}  # vLLM's template reads it
    c.messages.create(model="slow-model", max_tokens=2048, messages=MESSAGES,
                      thinking={"type": "enabled", "budget_tokens": 1024})
    sent = llm.requests()[-1]
    assert sent["reasoning_effort"] == "low" and "chat_template_kwargs" not in sent  # LM Studio reads the effort
    with pytest.raises(anthropic.BadRequestError) as bad:
        c.messages.create(model="qwen3-8b", max_tokens=10, messages=MESSAGES,
                          thinking={"type": "enabled"})  # type: ignore[typeddict-item]
    assert "budget_tokens" in bad.value.message


def test_x_workspace_takes_the_chat_path(gateway: Gateway, llm: FakeLLM) -> None:
    raw = client(gateway).messages.with_raw_response.create(
        model="coder", max_tokens=8, messages=MESSAGES, extra_headers={"x-workspace": "notes"})
    assert raw.parse().content[0].text == TEXT  # type: ignore[union-attr]
    # The session gateway has no knowledge store: the same fallback as /v1/chat/completions.
    assert raw.headers["x-appliance-route"] == "direct"
    assert "without retrieval" in raw.headers["x-appliance-warning"]


def test_stream_text_deltas_add_up_to_the_final_message(gateway: Gateway, llm: FakeLLM) -> None:
    with client(gateway).messages.stream(model="coder", max_tokens=64, messages=MESSAGES) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(deltas) == TEXT and len(deltas) == 8
    assert final.model == "coder"
    assert final.stop_reason == "end_turn"
    assert final.content[0].text == TEXT  # type: ignore[union-attr]
    assert final.usage.output_tokens == 8 and final.usage.input_tokens > 0
    assert llm.requests()[-1]["stream"] is True


def test_raw_stream_events_come_in_protocol_order(gateway: Gateway, llm: FakeLLM) -> None:
    events = list(client(gateway).messages.create(model="coder", max_tokens=64, messages=MESSAGES, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}


async def test_async_client_both_modes(gateway: Gateway, llm: FakeLLM) -> None:
    aclient = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    reply = await aclient.messages.create(model="qwen3-8b", max_tokens=16, messages=MESSAGES)
    assert reply.model == "qwen3-8b" and reply.content[0].text == TEXT  # type: ignore[union-attr]
    async with aclient.messages.stream(model="qwen3-8b", max_tokens=16, messages=MESSAGES) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text == TEXT
    await aclient.close()


TOOLS: Any = [{"name": "get_weather", "description": "Weather for a city",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def test_tool_use_round_trip(gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(tool_call={"name": "get_weather", "arguments": '{"city": "Oslo"}'})
    c = client(gateway)
    reply = c.messages.create(model="coder", max_tokens=64, messages=MESSAGES, tools=TOOLS,
                              tool_choice={"type": "any"})
    assert reply.stop_reason == "tool_use"
    use = next(b for b in reply.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Oslo"}
    sent = llm.requests()[-1]
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "parameters": TOOLS[0]["input_schema"]}}]
    assert sent["tool_choice"] == "required"

    llm.control(reply="It is sunny.")
    follow = c.messages.create(model="coder", max_tokens=64, tools=TOOLS, messages=[
        *MESSAGES,
        {"role": "assistant", "content": [b.model_dump() for b in reply.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "12 C, sun"}]},
    ])
    assert follow.content[0].text == "It is sunny."  # type: ignore[union-attr]
    sent = llm.requests()[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == use.id
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
    assert sent[2] == {"role": "tool", "tool_call_id": use.id, "content": "12 C, sun"}


def test_streamed_tool_use_arrives_as_input_json(gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(tool_call={"name": "lookup", "arguments": '{"q": 1}'}, tokens=0)
    with client(gateway).messages.stream(model="coder", max_tokens=64, messages=MESSAGES, tools=TOOLS) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in final.content] == [("tool_use", "lookup", {"q": 1})]  # type: ignore[union-attr]


def test_unknown_model_is_not_found_error(gateway: Gateway) -> None:
    with pytest.raises(anthropic.NotFoundError) as err:
        client(gateway).messages.create(model="claude-99", max_tokens=8, messages=MESSAGES)
    assert err.value.body == {"type": "error", "error": {
        "type": "not_found_error", "message": "The model 'claude-99' does not exist"}}


def test_invalid_bodies_are_invalid_request_error(gateway: Gateway) -> None:
    c = client(gateway)
    with pytest.raises(anthropic.BadRequestError) as err:  # the client refuses to omit max_tokens itself
        c.post("/v1/messages", body={"model": "coder", "messages": MESSAGES}, cast_to=anthropic.types.Message)
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "max_tokens" in err.value.message
    with pytest.raises(anthropic.BadRequestError):
        c.messages.create(model="coder", max_tokens=8, messages=[{"role": "system", "content": "x"}])  # type: ignore[list-item]
    with pytest.raises(anthropic.BadRequestError):
        c.messages.create(model="coder", max_tokens=8, messages=[])


def test_upstream_dropping_mid_stream_ends_with_an_error_event(gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(disconnect_after=3)
    seen = []
    with pytest.raises(anthropic.APIStatusError), \
            client(gateway).messages.stream(model="coder", max_tokens=64, messages=MESSAGES) as stream:
        seen.extend(stream.text_stream)
    assert "".join(seen) == "tok0 tok1 tok2"


def test_closing_the_stream_cancels_the_upstream(gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(tokens=200, delay_ms=20)
    with client(gateway).messages.stream(model="coder", max_tokens=512, messages=MESSAGES) as stream:
        assert next(iter(stream.text_stream)) == "tok0"
    # 200 tokens x 20 ms = 4 s if the gateway kept reading; it must drop the upstream well before.
    deadline = time.monotonic() + 3.0
    while llm.stats()["cancelled"] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = llm.stats()
    assert (stats["cancelled"], stats["completed"]) == (1, 0)


def test_api_key_in_x_api_key_header(tmp_path: Path, fake_llm: FakeLLM) -> None:
    digest = hashlib.sha256(b"sk-home-1").hexdigest()
    gw = start_gateway(tmp_path, catalog_for(fake_llm.port, extra=f'\n[[api_keys]]\nname = "me"\nsha256 = "{digest}"\n'))
    try:
        with pytest.raises(anthropic.AuthenticationError) as err:
            client(gw, api_key="sk-wrong").messages.create(model="coder", max_tokens=8, messages=MESSAGES)
        assert err.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        reply = client(gw, api_key="sk-home-1").messages.create(model="coder", max_tokens=8, messages=MESSAGES)
        assert reply.model == "coder"
    finally:
        procs.stop(gw.proc)
