"""The output parser chain's stages (domain/parsers), without sockets: each format recovered
whole and split across chunks, what stays text and is counted, and the chain over chunks and
bodies in OpenAI's shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.domain.parsers.chain import StreamChain, parse_body
from appliance.domain.parsers.output_format import answer_problem, retry_messages, strict_schema
from appliance.domain.parsers.reasoning import ThinkSplitter, split_text
from appliance.domain.parsers.stages import offered_tools
from appliance.domain.parsers.tool_text import RecoveredCall, ToolCallScanner

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = {"get_weather": WEATHER}
OSLO = {"city": "Oslo"}


def scan(text: str, step: int = 0, tools: dict[str, Any] = TOOLS) -> tuple[str, list[RecoveredCall], list[tuple[str, str]]]:
    counted: list[tuple[str, str]] = []
    scanner = ToolCallScanner(tools, count=lambda s, o: counted.append((s, o)))
    pieces = []
    for i in range(0, len(text), step or len(text) or 1):
        pieces += scanner.feed(text[i:i + (step or len(text))])
    pieces += scanner.finish()
    return ("".join(p for p in pieces if isinstance(p, str)), [p for p in pieces if isinstance(p, RecoveredCall)],
            counted)


CALLS = {
    "hermes": 'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
    "hermes_unclosed": '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}',
    "mistral": '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
    "mistral_args": '[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}',
    "llama3": '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}',
    "llama3_bare": '{"name": "get_weather", "parameters": {"city": "Oslo"}}',
    "json": '  {"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}',
    "openai_shape": '{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}',
}


@pytest.mark.parametrize("fmt", sorted(CALLS))
@pytest.mark.parametrize("step", [0, 1, 4])
def test_each_format_is_recovered_whole_or_split(fmt: str, step: int) -> None:
    text, calls, counted = scan(CALLS[fmt], step)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", OSLO)]
    assert calls[0].id.startswith("call_")
    assert text.strip() in ("", "Let me check.")
    assert counted == [("tool_calls", "recovered")]


def test_several_hermes_calls_in_a_row() -> None:
    one = '<tool_call>{"name": "get_weather", "arguments": {"city": "%s"}}</tool_call>'
    _, calls, _ = scan(one % "Oslo" + "\n" + one % "Bergen", 3)
    assert [json.loads(c.arguments)["city"] for c in calls] == ["Oslo", "Bergen"]


@pytest.mark.parametrize(("text", "outcome"), [
    ('<tool_call>{"name": "get_weather", "arguments": {"town": "Oslo"}}</tool_call>', "invalid_arguments"),
    ('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', "unknown_tool"),
    ('<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>', "unparsable"),
    ('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Oslo"}', "unparsable"),
])
def test_a_call_that_does_not_parse_or_validate_stays_text_and_is_counted(text: str, outcome: str) -> None:
    for step in (0, 2):
        out, calls, counted = scan(text, step)
        assert calls == [] and out == text
        assert counted == [("tool_calls", outcome)]


@pytest.mark.parametrize("text", ['{"answer": 42}', "[1, 2, 3]", "a < b, c [d] <|", '{"name": "Ada", "age": 36}'])
def test_answers_that_are_no_calls_pass_unchanged_and_uncounted(text: str) -> None:
    for step in (0, 1, 3):
        out, calls, counted = scan(text, step)
        assert out == text and calls == [] and counted == []


def test_a_marker_that_opens_no_call_is_text_but_counted() -> None:
    text = "I use <tool_call> tags and [TOOL_CALLS] too"
    out, calls, counted = scan(text, 2)
    assert out == text and calls == [] and counted == [("tool_calls", "unparsable")]


def test_a_call_longer_than_the_buffer_is_let_go_as_text() -> None:
    counted: list[tuple[str, str]] = []
    scanner = ToolCallScanner(TOOLS, max_buffer_chars=1024, count=lambda s, o: counted.append((s, o)))
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "' + "x" * 2000
    out = scanner.feed(text[:1500]) + scanner.feed(text[1500:]) + scanner.finish()
    assert "".join(p for p in out if isinstance(p, str)) == text
    assert counted == [("tool_calls", "too_long")]


@pytest.mark.parametrize("step", [1, 2, 5, 100])
def test_think_block_at_the_start_is_split_off(step: int) -> None:
    text = "\n<think>I should greet.\nBriefly.</think>\n\nHello there"
    splitter = ThinkSplitter()
    reasoning = content = ""
    for i in range(0, len(text), step):
        r, c = splitter.feed(text[i:i + step])
        reasoning, content = reasoning + r, content + c
        assert "<" not in c and "think>" not in r
    r, c = splitter.finish()
    assert (reasoning + r, content + c) == ("I should greet.\nBriefly.", "Hello there")


def test_think_elsewhere_is_the_answer_and_a_cut_off_block_is_all_reasoning() -> None:
    assert split_text("Use <think> tags") == (None, "Use <think> tags")
    assert split_text("<thinking about it") == (None, "<thinking about it")
    assert split_text("<think>still going") == ("still going", "")
    assert split_text("<th") == (None, "<th")


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def run_chain(chain: StreamChain, pieces: list[str], finish: str = "stop") -> list[dict[str, Any]]:
    out = [chain.feed(chunk({"role": "assistant", "content": ""}))]
    out += [chain.feed(chunk({"content": p})) for p in pieces]
    out.append(chain.feed(chunk({}, finish)))
    out.append(chain.finish())
    return [c for c in out if c is not None]


def test_stream_chain_emits_reasoning_content_and_tool_calls_in_openais_shape() -> None:
    text = '<think>Weather, so a tool.</think>\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    chunks = run_chain(StreamChain(reasoning=True, tools=TOOLS), [text[i:i + 3] for i in range(0, len(text), 3)])
    deltas = [c["choices"][0]["delta"] for c in chunks]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    assert reasoning == "Weather, so a tool." == "".join(d.get("reasoning", "") for d in deltas)
    assert "".join(d.get("content") or "" for d in deltas).strip() == ""
    calls = [tc for d in deltas for tc in d.get("tool_calls", ())]
    assert len(calls) == 1 and calls[0]["index"] == 0 and calls[0]["type"] == "function"
    assert calls[0]["function"]["name"] == "get_weather" and json.loads(calls[0]["function"]["arguments"]) == OSLO
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_chain_leaves_plain_chunks_as_the_same_objects() -> None:
    chain = StreamChain(reasoning=True, tools={})
    first = chunk({"content": "Hello"})
    assert chain.feed(first) is first
    later = chunk({"content": " <think>x</think>"})
    assert chain.feed(later) is later
    usage = {"choices": [], "usage": {"prompt_tokens": 1}}
    assert chain.feed(usage) is usage


def test_a_backends_reasoning_field_is_passed_and_mirrored() -> None:
    chain = StreamChain(reasoning=True, tools={})
    out = chain.feed(chunk({"reasoning": "hmm"}))
    assert out is not None and out["choices"][0]["delta"] == {"reasoning_content": "hmm", "reasoning": "hmm"}


def test_a_stream_ending_without_finish_reason_flushes_what_was_held() -> None:
    chain = StreamChain(reasoning=False, tools=TOOLS)
    assert chain.feed(chunk({"content": "<tool_ca"})) is None
    last = chain.finish()
    assert last is not None and last["choices"][0]["delta"] == {"content": "<tool_ca"} and last["id"] == "c1"


def test_native_tool_calls_keep_their_index_and_recovered_ones_follow() -> None:
    chain = StreamChain(reasoning=False, tools=TOOLS)
    native = {"index": 0, "id": "call_n", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    assert chain.feed(chunk({"tool_calls": [native]})) is not None
    out = chain.feed(chunk({"content": CALLS["hermes"]}, "tool_calls"))
    assert out is not None
    assert [c["index"] for c in out["choices"][0]["delta"]["tool_calls"]] == [1]


def test_parse_body_recovers_calls_and_reasoning() -> None:
    body = {"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "<think>plan</think>\n\n" + CALLS["mistral"]}}]}
    parse_body(body, reasoning=True, tools=TOOLS)
    choice = body["choices"][0]
    message = choice["message"]
    assert choice["finish_reason"] == "tool_calls"
    assert message["content"] is None and message["reasoning_content"] == message["reasoning"] == "plan"
    assert message["tool_calls"][0]["function"]["name"] == "get_weather"


def test_offered_tools_and_tool_choice_none() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    assert offered_tools({"tools": tools}) == {"get_weather": WEATHER}
    assert offered_tools({"tools": tools, "tool_choice": "none"}) == {}
    assert offered_tools({}) == {}


def test_strict_schema_check_and_retry_prompt() -> None:
    body = {"response_format": {"type": "json_schema", "json_schema": {"name": "w", "strict": True, "schema": WEATHER}}}
    schema = strict_schema(body)
    assert schema == WEATHER
    assert strict_schema({"response_format": {"type": "json_schema", "json_schema": {"schema": WEATHER}}}) is None
    assert answer_problem('{"city": "Oslo"}', WEATHER) is None
    assert "city" in (answer_problem('{"town": "Oslo"}', WEATHER) or "")
    assert (answer_problem("Sure! Here it is", WEATHER) or "").startswith("not JSON")
    retry = retry_messages([{"role": "user", "content": "q"}], "bad", "not JSON")
    assert [m["role"] for m in retry] == ["user", "assistant", "user"] and "not JSON" in retry[-1]["content"]


async def test_a_failed_schema_retry_returns_the_first_answer_with_the_warning() -> None:
    from appliance.api.errors import status_of
    from appliance.domain.chat import ChatService
    from appliance.domain.chat_request import ChatRequest
    from appliance.domain.errors import BackendUnavailable
    from appliance.domain.models import ModelDirectory
    from appliance.domain.parsers.policy import Parsers
    from appliance.domain.parsers.stages import default_stages
    from appliance.domain.routing import ModelRouter, RouteRule
    from tests.unit.chat_fakes import Codec, FakeBackend

    class FailsSecond(FakeBackend):
        async def complete(self, payload: Any) -> Any:
            if self.calls:
                self.calls.append(payload)
                raise BackendUnavailable("down", backend=self.name)
            return await super().complete(payload)

    backend = FailsSecond("b")
    router = ModelRouter([], [RouteRule("*", "b")])
    chat = ChatService(router, {"b": backend}, ModelDirectory(router, {"b": backend}, ttl_s=60), Codec(),
                       status_of=status_of, parsers=Parsers({"b": default_stages("llamacpp")}))
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}],
            "response_format": {"type": "json_schema", "json_schema": {"strict": True, "schema": WEATHER}}}
    req = ChatRequest(body, "m", False, "cid")
    plan = await chat.plan(req)
    reply = await chat.complete(req, plan)
    assert reply.body["choices"][0]["message"]["content"] == "hi"
    assert len(backend.calls) == 2 and (plan.schema_warning or "").startswith("not JSON")
