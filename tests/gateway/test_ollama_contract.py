"""The official `ollama` client, unchanged, against the gateway's Ollama API: chat and generate
(streaming by default, and not), options, tools, models, embeddings, errors."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any

import ollama
import pytest

from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway

MESSAGES = [{"role": "user", "content": "hello there"}]
TEXT = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
# A 1x1 PNG.
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082")).decode()


def client(gw: Gateway, **kw: Any) -> ollama.Client:
    return ollama.Client(host=gw.url, timeout=30, **kw)


def post(gw: Gateway, path: str, body: object) -> tuple[int, Message, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{gw.url}{path}", data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_chat_without_streaming(gateway: Gateway, llm: FakeLLM) -> None:
    reply = client(gateway).chat(model="coder", messages=MESSAGES, stream=False)
    assert reply.model == "coder"
    assert reply.message.role == "assistant" and reply.message.content == TEXT
    assert reply.done is True and reply.done_reason == "stop"
    assert reply.prompt_eval_count == 2 and reply.eval_count == 8  # the backend's usage
    assert reply.total_duration and reply.total_duration > 0 and reply.eval_duration is not None
    assert reply.created_at and reply.created_at.endswith("Z")
    sent = llm.requests()[-1]
    assert sent["model"] == "fake-model" and sent["messages"] == MESSAGES and sent["stream"] is False


def test_chat_streams_by_default_as_ndjson(gateway: Gateway, llm: FakeLLM) -> None:
    status, headers, raw = post(gateway, "/api/chat", {"model": "coder", "messages": MESSAGES})
    assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in raw.splitlines()]
    assert len(lines) == 9 and all(line["done"] is False for line in lines[:-1])
    assert "".join(line["message"]["content"] for line in lines) == TEXT
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 8
    assert llm.requests()[-1]["stream"] is True


def test_chat_stream_with_the_client(gateway: Gateway, llm: FakeLLM) -> None:
    parts = list(client(gateway).chat(model="qwen3-8b", messages=MESSAGES, stream=True))
    assert "".join(p.message.content or "" for p in parts) == TEXT
    assert {p.model for p in parts} == {"qwen3-8b"}
    last = parts[-1]
    assert last.done and last.done_reason == "stop" and last.prompt_eval_count == 2 and last.eval_count == 8
    assert last.total_duration and last.prompt_eval_duration is not None and last.eval_duration is not None
    assert last.total_duration >= last.eval_duration


async def test_async_client_both_modes(gateway: Gateway, llm: FakeLLM) -> None:
    aclient = ollama.AsyncClient(host=gateway.url, timeout=30)
    reply = await aclient.chat(model="coder", messages=MESSAGES)
    assert reply.message.content == TEXT
    text = "".join([p.message.content or "" async for p in await aclient.chat(model="coder", messages=MESSAGES, stream=True)])
    assert text == TEXT


def test_generate_both_modes(gateway: Gateway, llm: FakeLLM) -> None:
    c = client(gateway)
    reply = c.generate(model="coder", prompt="why is the sky blue", system="be brief")
    assert reply.response == TEXT and reply.done and reply.done_reason == "stop" and reply.eval_count == 8
    assert llm.requests()[-1]["messages"] == [{"role": "system", "content": "be brief"},
                                              {"role": "user", "content": "why is the sky blue"}]
    parts = list(c.generate(model="coder", prompt="again", stream=True))
    assert "".join(p.response or "" for p in parts) == TEXT and parts[-1].done and not parts[0].done


def test_think_is_told_to_the_backend_in_the_field_it_reads(gateway: Gateway, llm: FakeLLM) -> None:
    c = client(gateway)
    c.chat(model="coder", messages=MESSAGES, think=False)
    assert llm.requests()[-1]["chat_template_kwargs"] == {"enable_thinking": False}  # a vLLM backend
    c.generate(model="slow-model", prompt="why", think="high")
    assert llm.requests()[-1]["reasoning_effort"] == "high"  # LM Studio reads the effort
    with pytest.raises(ollama.ResponseError) as bad:
        c.chat(model="coder", messages=MESSAGES, think="very")  # type: ignore[arg-type]
    assert bad.value.status_code == 400 and "think" in str(bad.value)


def test_options_and_format_are_mapped(gateway: Gateway, llm: FakeLLM) -> None:
    c = client(gateway)
    reply = c.chat(model="coder", messages=MESSAGES, format="json", options={
        "temperature": 0.2, "top_p": 0.9, "top_k": 20, "seed": 7, "num_predict": 100, "stop": ["\n\n"],
        "num_ctx": 8192, "repeat_penalty": 1.1})
    assert reply.message.content == TEXT
    sent = llm.requests()[-1]
    assert sent["temperature"] == 0.2 and sent["top_p"] == 0.9 and sent["seed"] == 7
    assert sent["max_tokens"] == 100 and sent["stop"] == ["\n\n"]
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["top_k"] == 20  # a vLLM backend takes it
    assert "num_ctx" not in sent and "repeat_penalty" not in sent and "options" not in sent
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    c.chat(model="coder", messages=MESSAGES, format=schema)
    assert llm.requests()[-1]["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


def test_num_predict_and_stop_end_the_answer(gateway: Gateway, llm: FakeLLM) -> None:
    c = client(gateway)
    reply = c.chat(model="coder", messages=MESSAGES, options={"num_predict": 3})
    assert reply.message.content == "tok0 tok1 tok2" and reply.done_reason == "length" and reply.eval_count == 3
    parts = list(c.generate(model="coder", prompt="count", options={"num_predict": 2}, stream=True))
    assert "".join(p.response or "" for p in parts) == "tok0 tok1" and parts[-1].done_reason == "length"
    reply = c.chat(model="coder", messages=MESSAGES, options={"stop": [" tok4"]})
    assert reply.message.content == "tok0 tok1 tok2 tok3" and reply.done_reason == "stop"


def test_tool_call_round_trip(gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(tool_call={"name": "get_weather", "arguments": '{"city": "Oslo"}'}, tokens=0)
    c = client(gateway)
    reply = c.chat(model="coder", messages=[{"role": "user", "content": "weather in Oslo?"}], tools=[WEATHER])
    assert reply.done_reason == "stop"  # Ollama reports a tool call as a normal stop
    call = reply.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Oslo"}
    sent = llm.requests()[-1]
    assert sent["tools"][0]["function"]["name"] == "get_weather"

    llm.control(reply="It is 7 degrees in Oslo.")
    answer = c.chat(model="coder", tools=[WEATHER], messages=[
        {"role": "user", "content": "weather in Oslo?"}, reply.message,
        {"role": "tool", "content": '{"celsius": 7}', "tool_name": "get_weather"}])
    assert answer.message.content == "It is 7 degrees in Oslo."
    assistant, tool = llm.requests()[-1]["messages"][1:]
    assert assistant["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert tool == {"role": "tool", "tool_call_id": assistant["tool_calls"][0]["id"], "content": '{"celsius": 7}'}


def test_streamed_tool_calls_arrive_whole(gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(tool_call=[{"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "celsius"}'},
                           {"name": "get_weather", "arguments": '{"city": "Bergen"}'}], fragments=4, tokens=0)
    parts = list(client(gateway).chat(model="coder", messages=MESSAGES, tools=[WEATHER], stream=True))
    calls = [call for p in parts for call in (p.message.tool_calls or [])]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo", "unit": "celsius"}), ("get_weather", {"city": "Bergen"})]
    assert parts[-1].done and parts[-1].done_reason == "stop"


def test_images_become_image_parts(gateway: Gateway, llm: FakeLLM) -> None:
    client(gateway).chat(model="coder", messages=[{"role": "user", "content": "what is this?", "images": [PNG]}])
    content = llm.requests()[-1]["messages"][0]["content"]
    assert content == [{"type": "text", "text": "what is this?"},
                       {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]


def test_load_request_resolves_the_model_without_generating(gateway: Gateway, llm: FakeLLM) -> None:
    status, _, raw = post(gateway, "/api/chat", {"model": "coder", "messages": []})
    assert status == 200 and json.loads(raw)["done_reason"] == "load"
    status, _, raw = post(gateway, "/api/generate", {"model": "coder", "keep_alive": 0})
    assert status == 200 and json.loads(raw)["done_reason"] == "unload"
    assert llm.requests() == []
    assert post(gateway, "/api/chat", {"model": "gpt-99", "messages": []})[0] == 404


def test_list_show_and_version(gateway: Gateway) -> None:
    c = client(gateway)
    names = [m.model for m in c.list().models]
    assert names[:2] == ["coder", "fake-model"] and "qwen3-8b" in names and "discovered-only" in names
    first = c.list().models[0]
    assert first.digest == hashlib.sha256(b"coder").hexdigest() and first.size == 0
    shown = c.show("coder")
    assert shown.capabilities is not None and "completion" in shown.capabilities
    with pytest.raises(ollama.ResponseError) as err:
        c.show("no-such-model")
    assert err.value.status_code == 404
    with urllib.request.urlopen(f"{gateway.url}/api/version", timeout=10) as resp:
        assert json.loads(resp.read())["version"]


def test_embed_and_legacy_embeddings(gateway: Gateway) -> None:
    c = client(gateway)
    result = c.embed(model="all-minilm", input=["why is the sky blue?", "why is the grass green?"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 384
    assert result.model and result.prompt_eval_count and result.prompt_eval_count > 0
    single = c.embed(model="all-minilm", input="why is the sky blue?")
    assert single.embeddings[0] == pytest.approx(result.embeddings[0], abs=1e-5)
    legacy = c.embeddings(model="all-minilm", prompt="why is the sky blue?")
    assert list(legacy.embedding) == pytest.approx(result.embeddings[0], abs=1e-5)
    with pytest.raises(ollama.ResponseError) as err:
        c.embed(model="all-minilm", input=[])
    assert err.value.status_code == 400


def test_errors_are_ollama_shaped(gateway: Gateway, llm: FakeLLM) -> None:
    c = client(gateway)
    with pytest.raises(ollama.ResponseError) as err:
        c.chat(model="gpt-99", messages=MESSAGES)
    assert err.value.status_code == 404 and "gpt-99" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        list(c.chat(model="gpt-99", messages=MESSAGES, stream=True))
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        c.chat(model="dead-1", messages=MESSAGES)
    assert err.value.status_code == 502
    with pytest.raises(ollama.ResponseError) as err:
        c.chat(model="coder", messages=MESSAGES, options={"temperature": "hot"})
    assert err.value.status_code == 400 and "options.temperature" in err.value.error
    for body in (b"{not json", b"[]", b'{"messages": []}', b'{"model": "coder", "messages": [{"role": "wizard"}]}'):
        status, _, raw = post(gateway, "/api/chat", body)
        assert status == 400 and set(json.loads(raw)) == {"error"}
    status, _, raw = post(gateway, "/api/generate", {"model": "coder", "prompt": "x", "raw": True})
    assert status == 400 and "raw" in json.loads(raw)["error"]
    llm.control(status=429)
    with pytest.raises(ollama.ResponseError) as err:
        c.chat(model="coder", messages=MESSAGES)
    assert err.value.status_code == 429 and err.value.error == "fake upstream error 429"


def test_upstream_dropping_mid_stream_ends_with_an_error_line(gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(disconnect_after=3)
    seen = []
    with pytest.raises(ollama.ResponseError, match=r"ended the stream early|unreachable"):
        for part in client(gateway).chat(model="coder", messages=MESSAGES, stream=True):
            seen.append(part.message.content or "")
    assert "".join(seen) == "tok0 tok1 tok2"


def test_workspace_header_and_metrics_apply(gateway: Gateway, llm: FakeLLM) -> None:
    req = urllib.request.Request(f"{gateway.url}/api/chat", method="POST", headers={"x-workspace": "home"},
                                 data=json.dumps({"model": "coder", "messages": MESSAGES, "stream": False}).encode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        # This gateway has no knowledge store: the chat is answered direct, and says so.
        assert "without retrieval" in resp.headers["x-appliance-warning"]
        assert resp.headers["x-appliance-backend"] == "local-vllm"
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert 'appliance_http_requests_total{method="POST",route="/api/chat",status="200"}' in text


def test_client_disconnect_cancels_the_upstream_stream(gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(tokens=200, delay_ms=20)
    body = json.dumps({"model": "coder", "messages": MESSAGES}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    conn.request("POST", "/api/chat", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read1(64)
    conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    conn.close()
    deadline = time.monotonic() + 3.0  # 200 tokens x 20 ms = 4 s if the gateway kept reading
    while llm.stats()["cancelled"] != 1:
        assert time.monotonic() < deadline, "the upstream stream was not cancelled"
        time.sleep(0.05)
    assert llm.stats()["completed"] == 0


def test_api_keys_are_checked(tmp_path: Path, llm: FakeLLM) -> None:
    digest = hashlib.sha256(b"sk-home-1").hexdigest()
    gw = start_gateway(tmp_path, catalog_for(llm.port, extra=f'\n[[api_keys]]\nname = "me"\nsha256 = "{digest}"\n'))
    try:
        with pytest.raises(ollama.ResponseError) as err:
            client(gw, headers={"Authorization": "Bearer sk-wrong"}).list()
        assert err.value.status_code == 401 and err.value.error == "Invalid API key"
        ok = client(gw, headers={"Authorization": "Bearer sk-home-1"})
        assert ok.chat(model="coder", messages=MESSAGES).message.content == TEXT
    finally:
        procs.stop(gw.proc)
