"""The output parser chain through the gateway, with the official clients: a local model's
tool calls and `<think>` blocks written as text (the fake LLM's local-model habits) arrive as
real tool calls and reasoning in OpenAI chat, `thinking` blocks in Anthropic messages and
`thinking` in Ollama; strict json_schema answers are checked and asked again; image URLs are
inlined for llama.cpp, and a loopback one is refused."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests import procs
from tests.conftest import CLOUD_BACKEND, FakeLLM, Gateway, catalog_for, start_gateway

MESSAGES: Any = [{"role": "user", "content": "weather in Oslo?"}]
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                  "additionalProperties": False}
TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
OSLO = {"city": "Oslo"}
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082")

EXTRA = """
[[backends]]
name = "llama"
kind = "llamacpp"
base_url = "http://127.0.0.1:{port}/v1"
discover = false

[[routes]]
pattern = "llama-*"
backend = "llama"
""" + CLOUD_BACKEND + """
[[models]]
id = "raw"
backend = "local-vllm"
upstream_id = "fake-model"
parsers = []
"""


@pytest.fixture(scope="module")
def gw(fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Image URLs on 127.0.0.1 are allowed here only, for the test's image server (the
    setting's default refuses them)."""
    gateway = start_gateway(tmp_path_factory.mktemp("parsers-gw"),
                            catalog_for(fake_llm.port, extra=EXTRA.format(port=fake_llm.port)),
                            APPLIANCE_PARSERS__IMAGE_ALLOW_NETWORKS='["127.0.0.1/32"]')
    try:
        yield gateway
    finally:
        procs.stop(gateway.proc)


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)


def call_knob(fmt: str) -> dict[str, Any]:
    return {"format": fmt, "name": "get_weather", "arguments": OSLO}


@pytest.mark.parametrize("fmt", ["hermes", "mistral", "json"])
def test_text_tool_calls_become_tool_calls(gw: Gateway, llm: FakeLLM, fmt: str) -> None:
    llm.control(text_tool_call=call_knob(fmt))
    reply = oai(gw).chat.completions.create(model="qwen3-8b", messages=MESSAGES, tools=TOOLS)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("get_weather", OSLO)]  # type: ignore[union-attr]
    assert not (choice.message.content or "").strip()


@pytest.mark.parametrize("fmt", ["hermes", "mistral_args", "llama3"])
def test_streamed_text_tool_calls_split_anywhere_become_tool_call_deltas(gw: Gateway, llm: FakeLLM, fmt: str) -> None:
    llm.control(text_tool_call=call_knob(fmt), reply="Checking.", chunk_chars=3)
    chunks = list(oai(gw).chat.completions.create(model="qwen3-8b", messages=MESSAGES, tools=TOOLS, stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.strip() == "Checking."
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert len(deltas) == 1 and deltas[0].index == 0 and deltas[0].id and deltas[0].type == "function"
    assert deltas[0].function.name == "get_weather" and json.loads(deltas[0].function.arguments or "") == OSLO  # type: ignore[union-attr]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_without_tools_offered_the_text_stays_text(gw: Gateway, llm: FakeLLM) -> None:
    llm.control(text_tool_call=call_knob("hermes"))
    reply = oai(gw).chat.completions.create(model="qwen3-8b", messages=MESSAGES)
    assert reply.choices[0].finish_reason == "stop" and "<tool_call>" in (reply.choices[0].message.content or "")


def test_a_call_with_invalid_arguments_stays_text_and_is_counted(gw: Gateway, llm: FakeLLM) -> None:
    llm.control(text_tool_call={"format": "hermes", "name": "get_weather", "arguments": {"town": "Oslo"}})
    reply = oai(gw).chat.completions.create(model="qwen3-8b", messages=MESSAGES, tools=TOOLS)
    assert reply.choices[0].message.tool_calls is None and "<tool_call>" in (reply.choices[0].message.content or "")
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'appliance_parser_events_total{outcome="invalid_arguments",stage="tool_calls"}' in metrics
    assert 'appliance_parser_events_total{outcome="recovered",stage="tool_calls"}' in metrics


def test_think_blocks_become_reasoning_content_json_and_stream(gw: Gateway, llm: FakeLLM) -> None:
    llm.control(think="The user wants a greeting.", reply="Hello there", chunk_chars=2)
    reply = oai(gw).chat.completions.create(model="qwen3-8b", messages=MESSAGES)
    message = reply.choices[0].message
    assert message.content == "Hello there"
    extra = message.model_extra or {}
    assert extra["reasoning_content"] == extra["reasoning"] == "The user wants a greeting."
    chunks = list(oai(gw).chat.completions.create(model="qwen3-8b", messages=MESSAGES, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Hello there"
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas) == "The user wants a greeting."
    assert "".join((d.model_extra or {}).get("reasoning") or "" for d in deltas) == "The user wants a greeting."


def test_a_backends_reasoning_field_is_mirrored(gw: Gateway, llm: FakeLLM) -> None:
    llm.control(reasoning="thought", reply="ok")
    extra = oai(gw).chat.completions.create(model="qwen3-8b", messages=MESSAGES).choices[0].message.model_extra or {}
    assert extra["reasoning_content"] == extra["reasoning"] == "thought"


def test_chain_off_for_a_model_with_no_parsers_and_for_a_cloud_backend(gw: Gateway, llm: FakeLLM) -> None:
    llm.control(think="hidden", reply="Hello", text_tool_call=call_knob("hermes"))
    for model in ("raw", "cloud-gpt"):
        reply = oai(gw).chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS)
        content = reply.choices[0].message.content or ""
        assert content.startswith("<think>hidden</think>") and "<tool_call>" in content
        assert reply.choices[0].message.tool_calls is None


def schema_format() -> Any:
    return {"type": "json_schema", "json_schema": {"name": "weather", "strict": True, "schema": WEATHER_SCHEMA}}


def test_strict_schema_answer_is_retried_once_then_warned(gw: Gateway, llm: FakeLLM) -> None:
    llm.control(replies=["Sure! The city is Oslo.", '{"city": "Oslo"}'])
    raw = oai(gw).chat.completions.with_raw_response.create(model="qwen3-8b", messages=MESSAGES,
                                                            response_format=schema_format())
    assert json.loads(raw.parse().choices[0].message.content or "") == OSLO
    assert "x-appliance-schema-warning" not in raw.headers
    sent = llm.requests()
    assert len(sent) == 2 and "does not match the required JSON schema" in sent[1]["messages"][-1]["content"]

    llm.control(replies=['{"town": "Oslo"}'])
    raw = oai(gw).chat.completions.with_raw_response.create(model="qwen3-8b", messages=MESSAGES,
                                                            response_format=schema_format())
    assert raw.parse().choices[0].message.content == '{"town": "Oslo"}'
    assert "city" in raw.headers["x-appliance-schema-warning"]
    assert len(llm.requests()) == 2 + 2  # one retry, as configured


def test_anthropic_thinking_blocks_json_and_stream(gw: Gateway, llm: FakeLLM) -> None:
    llm.control(think="Greet briefly.", reply="Hello there", chunk_chars=3)
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    reply = client.messages.create(model="qwen3-8b", max_tokens=64, messages=MESSAGES)
    assert [b.type for b in reply.content] == ["thinking", "text"]
    assert reply.content[0].thinking == "Greet briefly." and reply.content[0].signature == ""  # type: ignore[union-attr]
    assert reply.content[1].text == "Hello there"  # type: ignore[union-attr]
    with client.messages.stream(model="qwen3-8b", max_tokens=64, messages=MESSAGES) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Greet briefly." and final.content[1].text == "Hello there"  # type: ignore[union-attr]
    kinds = [(e.type, getattr(getattr(e, "delta", None), "type", None)) for e in events]
    assert ("content_block_delta", "thinking_delta") in kinds


def test_anthropic_tool_use_from_a_text_tool_call(gw: Gateway, llm: FakeLLM) -> None:
    llm.control(text_tool_call=call_knob("hermes"))
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    reply = client.messages.create(model="qwen3-8b", max_tokens=64, messages=MESSAGES, tools=[
        {"name": "get_weather", "input_schema": WEATHER_SCHEMA}])  # type: ignore[list-item]
    uses = [b for b in reply.content if b.type == "tool_use"]
    assert reply.stop_reason == "tool_use" and uses[0].name == "get_weather" and uses[0].input == OSLO  # type: ignore[union-attr]


def test_ollama_thinking_chat_and_generate(gw: Gateway, llm: FakeLLM) -> None:
    llm.control(think="Greet briefly.", reply="Hello there", chunk_chars=4)
    client = ollama.Client(host=gw.url, timeout=30)
    reply = client.chat(model="qwen3-8b", messages=MESSAGES, stream=False)
    assert reply.message.thinking == "Greet briefly." and reply.message.content == "Hello there"
    parts = list(client.chat(model="qwen3-8b", messages=MESSAGES, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == "Greet briefly."
    assert "".join(p.message.content or "" for p in parts) == "Hello there"
    generated = client.generate(model="qwen3-8b", prompt="hi", stream=False)
    assert generated.thinking == "Greet briefly." and generated.response == "Hello there"


def image_message(url: str) -> Any:
    return [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def test_image_urls_are_inlined_for_llamacpp_only(gw: Gateway, llm: FakeLLM, images: str) -> None:
    oai(gw).chat.completions.create(model="llama-vision", messages=image_message(f"{images}/cat.png"))
    part = llm.requests()[-1]["messages"][0]["content"][1]
    assert part["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    oai(gw).chat.completions.create(model="qwen3-8b", messages=image_message(f"{images}/cat.png"))  # vLLM fetches
    assert llm.requests()[-1]["messages"][0]["content"][1]["image_url"]["url"] == f"{images}/cat.png"


@pytest.mark.parametrize("host", ["127.0.0.2", "[::ffff:10.1.2.3]", "[::1]"])
def test_image_urls_on_loopback_or_private_addresses_are_refused(gw: Gateway, llm: FakeLLM, images: str,
                                                                  host: str) -> None:
    port = images.rsplit(":", 1)[1]
    with pytest.raises(openai.BadRequestError) as err:
        oai(gw).chat.completions.create(model="llama-vision", messages=image_message(f"http://{host}:{port}/x.png"))
    assert err.value.status_code == 400
    body: Any = err.value.body
    assert body["param"] == "messages[0].content[1].image_url.url" and "address" in body["message"]
    assert llm.requests() == []


def test_only_http_image_urls_are_fetched(gw: Gateway, llm: FakeLLM) -> None:
    req = urllib.request.Request(f"{gw.base_url}/chat/completions", method="POST",
                                 headers={"Content-Type": "application/json"},
                                 data=json.dumps({"model": "llama-vision",
                                                  "messages": image_message("file:///etc/passwd")}).encode())
    with urllib.request.urlopen(req, timeout=10) as resp:  # not an http(s) URL: left as it is, for the backend
        assert resp.status == 200
    assert llm.requests()[-1]["messages"][0]["content"][1]["image_url"]["url"] == "file:///etc/passwd"
