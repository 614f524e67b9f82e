"""The official `openai` client, unchanged, against the gateway: chat (both modes), models, errors."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest

from tests.conftest import FakeLLM, Gateway

MESSAGES = [{"role": "user", "content": "hello there"}]


def client(gw: Gateway, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, **kw)  # type: ignore[arg-type]


def test_chat_non_streaming_returns_the_requested_model_name(gateway: Gateway, llm: FakeLLM) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(model="coder", messages=MESSAGES)
    reply = raw.parse()
    assert reply.model == "coder"
    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    assert raw.headers["x-appliance-backend"] == "local-vllm"
    assert float(raw.headers["x-appliance-overhead-ms"]) >= 0
    # The backend was sent the catalog's upstream id, not the alias.
    assert llm.requests()[-1]["model"] == "fake-model"


def test_chat_streaming_relays_every_token_in_order(gateway: Gateway, llm: FakeLLM) -> None:
    stream = client(gateway).chat.completions.create(model="coder", messages=MESSAGES, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
    assert {c.model for c in chunks} == {"coder"}
    assert chunks[-1].choices[0].finish_reason == "stop"
    # Usage was not asked for, so it is not relayed (though the gateway asked upstream for it).
    assert all(c.usage is None for c in chunks)
    assert llm.requests()[-1]["stream_options"] == {"include_usage": True}


def test_stream_include_usage_is_passed_through(gateway: Gateway, llm: FakeLLM) -> None:
    chunks = list(client(gateway).chat.completions.create(
        model="qwen3-8b", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].choices == []


async def test_async_client_both_modes(gateway: Gateway, llm: FakeLLM) -> None:
    aclient = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    reply = await aclient.chat.completions.create(model="qwen3-8b", messages=MESSAGES)  # type: ignore[arg-type]
    assert reply.model == "qwen3-8b"
    stream = await aclient.chat.completions.create(model="qwen3-8b", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text.startswith("tok0 tok1")
    await aclient.close()


def test_tools_response_format_n_logprobs_and_unknown_fields_pass_through(gateway: Gateway, llm: FakeLLM) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
    llm.control(tool_call={"name": "get_weather", "arguments": '{"city": "Oslo"}'})
    reply = client(gateway).chat.completions.create(
        model="coder", messages=MESSAGES, tools=tools, response_format={"type": "json_object"}, n=1,  # type: ignore[arg-type]
        logprobs=True, extra_body={"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}})
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    sent = llm.requests()[-1]
    assert sent["tools"] == tools and sent["response_format"] == {"type": "json_object"}
    assert sent["n"] == 1 and sent["logprobs"] is True
    assert sent["top_k"] == 20 and sent["chat_template_kwargs"] == {"enable_thinking": False}


def test_streamed_tool_call_arrives_whole(gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(tool_call={"name": "lookup", "arguments": '{"q": 1}'}, tokens=0)
    chunks = list(client(gateway).chat.completions.create(model="coder", messages=MESSAGES, stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "lookup"  # type: ignore[union-attr]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_models_list_and_retrieve(gateway: Gateway) -> None:
    c = client(gateway)
    ids = [m.id for m in c.models.list()]
    # Catalog entries first, then what the backend reports (discovered, de-duplicated).
    assert ids[:2] == ["coder", "fake-model"]
    assert "qwen3-8b" in ids and "discovered-only" in ids and ids.count("fake-model") == 1
    assert c.models.retrieve("coder").id == "coder"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("no-such-model")


def test_a_model_only_the_backend_knows_is_routed(gateway: Gateway, llm: FakeLLM) -> None:
    reply = client(gateway).chat.completions.create(model="discovered-only", messages=MESSAGES)
    assert reply.model == "discovered-only"
    assert llm.requests()[-1]["model"] == "discovered-only"


def test_unknown_model_is_404_model_not_found(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client(gateway).chat.completions.create(model="gpt-99", messages=MESSAGES)
    assert err.value.code == "model_not_found"
    assert err.value.body["param"] == "model"  # type: ignore[index]


def test_invalid_fields_are_400_with_param(gateway: Gateway) -> None:
    c = client(gateway)
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="coder", messages=[])
    assert err.value.body["param"] == "messages"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="coder", messages=[{"role": "wizard", "content": "x"}])  # type: ignore[list-item]
    assert err.value.body["param"] == "messages[0].role"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="coder", messages=MESSAGES, temperature=7)
    assert err.value.body["param"] == "temperature"  # type: ignore[index]


def test_backend_unreachable_is_502(gateway: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client(gateway).chat.completions.create(model="dead-1", messages=MESSAGES)
    assert err.value.status_code == 502
    assert err.value.code == "backend_unavailable"


def test_backend_timeout_is_504(gateway: Gateway, llm: FakeLLM) -> None:
    # The `slow` backend has timeout_s = 1; the fake answers after 2.5 s.
    with pytest.raises(openai.APIStatusError) as err:
        client(gateway).chat.completions.create(model="slow-1", messages=MESSAGES,
                                                extra_body={"fake": {"delay_ms": 2500}})
    assert err.value.status_code == 504
    assert err.value.code == "backend_timeout"


def test_backend_4xx_passes_through_with_its_message(gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(status=422)
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client(gateway).chat.completions.create(model="coder", messages=MESSAGES)
    assert err.value.body["message"] == "fake upstream error 422"  # type: ignore[index]
    llm.control(status=429)
    with pytest.raises(openai.RateLimitError):
        client(gateway).chat.completions.create(model="coder", messages=MESSAGES)


def test_upstream_dropping_mid_stream_reaches_the_client_as_an_error(gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(disconnect_after=3)
    stream = client(gateway).chat.completions.create(model="coder", messages=MESSAGES, stream=True)
    seen = []
    with pytest.raises(openai.APIError, match=r"ended the stream early|unreachable"):
        for chunk in stream:
            seen.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(seen) == "tok0 tok1 tok2"


def test_the_gateway_keeps_serving_after_errors(gateway: Gateway, llm: FakeLLM) -> None:
    for body in (b"{not json", b"[]", b'{"model": 5, "messages": []}', b""):
        req = urllib.request.Request(f"{gateway.base_url}/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 400
        assert set(json.loads(err.value.read())["error"]) == {"message", "type", "param", "code"}
    assert client(gateway).chat.completions.create(model="coder", messages=MESSAGES).model == "coder"
