"""The Messages API translation, with plain dicts: validation, request, reply and stream events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.anthropic.messages import message_response, parse_messages
from appliance.anthropic.stream import StreamTranslator
from appliance.wire.errors import WireError

BASE: dict[str, Any] = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def parse(events: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for raw in b"".join(events).split(b"\n\n")[:-1]:
        name, data = raw.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        payload = json.loads(data[6:])
        assert payload["type"] == name[7:].decode()
        out.append((payload["type"], payload))
    return out


@pytest.mark.parametrize(("patch", "param"), [
    ({"model": ""}, "model"),
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages[0].content[0]"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"temperature": 1.5}, "temperature"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"stream": "yes"}, "stream"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice"),
])
def test_invalid_requests_name_the_field(patch: dict[str, Any], param: str) -> None:
    with pytest.raises(WireError) as err:
        parse_messages({**BASE, **patch})
    assert err.value.param == param


def test_valid_request_returns_model_and_stream() -> None:
    call = parse_messages(BASE)
    assert (call.model, call.stream) == ("m", False)
    call = parse_messages({**BASE, "stream": True, "unknown_field": 1})
    assert (call.model, call.stream, call.body["stream"]) == ("m", True, True)
    assert "unknown_field" not in call.body
    with pytest.raises(WireError):
        parse_messages([BASE])


def test_system_blocks_and_sampling_map_to_openai_fields() -> None:
    body = {**BASE, "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            "temperature": 0.3, "top_p": 0.8, "top_k": 5, "stop_sequences": ["END"],
            "metadata": {"user_id": "u"}, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    call = parse_messages(body)
    out = call.body
    assert out["messages"] == [{"role": "system", "content": "Be brief.\nBe kind."},
                               {"role": "user", "content": "hi"}]
    assert (out["temperature"], out["top_p"], out["stop"], out["user"]) == (0.3, 0.8, ["END"], "u")
    assert call.extensions == {"top_k": 5, "thinking": {"on": True, "effort": "low"}}
    assert call.stop_sequences == ("END",)
    assert out["max_tokens"] == 16 and "thinking" not in out


def test_tool_use_and_tool_result_blocks_become_tool_calls_and_tool_messages() -> None:
    body = {**BASE, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                          {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [{"type": "text", "text": "sunny"}]},
                                     {"type": "tool_result", "tool_use_id": "t2", "content": "boom", "is_error": True},
                                     {"type": "text", "text": "thanks"}]},
    ]}
    msgs = parse_messages(body).body["messages"]
    assert msgs[1] == {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "t1", "type": "function", "function": {"name": "w", "arguments": '{"city": "Oslo"}'}}]}
    assert msgs[2] == {"role": "tool", "tool_call_id": "t1", "content": "sunny"}
    assert msgs[3] == {"role": "tool", "tool_call_id": "t2", "content": "Error: boom"}
    assert msgs[4] == {"role": "user", "content": "thanks"}


def test_images_become_image_url_parts() -> None:
    content = [{"type": "text", "text": "what is this?"},
               {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}},
               {"type": "image", "source": {"type": "url", "url": "https://example.test/a.png"}}]
    msg = parse_messages({**BASE, "messages": [{"role": "user", "content": content}]}).body["messages"][0]
    assert msg["content"] == [{"type": "text", "text": "what is this?"},
                              {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
                              {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}}]


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "w"}, {"type": "function", "function": {"name": "w"}}),
])
def test_tools_and_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    tools = [{"name": "w", "description": "weather", "input_schema": {"type": "object"}}]
    out = parse_messages({**BASE, "tools": tools, "tool_choice": choice}).body
    assert out["tools"] == [{"type": "function", "function": {
        "name": "w", "description": "weather", "parameters": {"type": "object"}}}]
    assert out["tool_choice"] == expected


def test_disable_parallel_tool_use() -> None:
    out = parse_messages({**BASE, "tools": [{"name": "w", "input_schema": {}}],
                          "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}).body
    assert out["parallel_tool_calls"] is False


def test_completion_becomes_a_message() -> None:
    completion = {"id": "chatcmpl-1", "model": "upstream", "choices": [{"index": 0, "finish_reason": "tool_calls",
                  "message": {"role": "assistant", "content": "Let me look.", "tool_calls": [
                      {"id": "call_0", "type": "function", "function": {"name": "w", "arguments": '{"a": 1}'}},
                      {"id": "call_1", "type": "function", "function": {"name": "v", "arguments": "not json"}}]}}],
                  "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    assert message_response(completion, model="alias", message_id="msg_1") == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "alias",
        "content": [{"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "call_0", "name": "w", "input": {"a": 1}},
                    {"type": "tool_use", "id": "call_1", "name": "v", "input": {"_unparsed_arguments": "not json"}}],
        "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 7, "output_tokens": 3}}


@pytest.mark.parametrize(("finish", "reason"), [("stop", "end_turn"), ("length", "max_tokens"),
                                                 ("content_filter", "refusal"), (None, "end_turn")])
def test_stop_reasons(finish: str | None, reason: str) -> None:
    completion = {"choices": [{"message": {"content": ""}, "finish_reason": finish}]}
    reply = message_response(completion, model="m", message_id="msg_1")
    assert reply["stop_reason"] == reason and reply["content"] == [] and reply["usage"]["input_tokens"] == 0


def test_a_stop_sequence_the_backend_reports_is_named() -> None:
    completion = {"choices": [{"message": {"content": "a"}, "finish_reason": "stop", "stop_reason": "END"}]}
    reply = message_response(completion, model="m", message_id="msg_1", stop_sequences=("END",))
    assert (reply["stop_reason"], reply["stop_sequence"]) == ("stop_sequence", "END")


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_stream_of_text_then_tool_calls() -> None:
    t = StreamTranslator("alias", "msg_c1")
    events = []
    for c in (chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"}), chunk({"content": " there"}),
              chunk({"tool_calls": [{"index": 0, "id": "call_0", "function": {"name": "w", "arguments": ""}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
              chunk({"tool_calls": [{"index": 1, "id": "call_1", "function": {"name": "v", "arguments": "{}"}}]}),
              chunk({}, "tool_calls"),
              {"id": "c1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}):
        events += t.feed(c)
    events += t.finish()
    seq = parse(events)
    assert [name for name, _ in seq] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    start = seq[0][1]["message"]
    assert start["model"] == "alias" and start["id"] == "msg_c1" and start["usage"]["input_tokens"] == 0
    assert seq[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert [e["delta"]["text"] for _, e in seq[2:4]] == ["Hi", " there"]
    assert seq[5][1]["content_block"] == {"type": "tool_use", "id": "call_0", "name": "w", "input": {}}
    assert "".join(e["delta"]["partial_json"] for _, e in seq[6:8]) == '{"a": 1}'
    assert {e["index"] for _, e in seq[5:9]} == {1} and {e["index"] for _, e in seq[9:12]} == {2}
    assert seq[12][1] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                          "usage": {"output_tokens": 4, "input_tokens": 9}}


def test_an_empty_stream_is_still_a_whole_message() -> None:
    seq = parse(StreamTranslator("m", "msg_1").finish())
    assert [name for name, _ in seq] == ["message_start", "message_delta", "message_stop"]
    assert seq[1][1]["delta"]["stop_reason"] == "end_turn" and seq[1][1]["usage"] == {"output_tokens": 0}


def test_length_finish_and_other_choices_ignored() -> None:
    t = StreamTranslator("m", "msg_1")
    events = t.feed({"choices": [{"index": 1, "delta": {"content": "other"}}, {"index": 0, "delta": {"content": "x"}}]})
    events += t.feed(chunk({}, "length")) + t.finish()
    seq = parse(events)
    assert [e["delta"]["text"] for n, e in seq if n == "content_block_delta"] == ["x"]
    assert seq[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_events_are_one_line_utf8() -> None:
    [raw] = StreamTranslator("m", "msg_1").feed(chunk({"content": "naïve\nline"}))[2:3]
    assert raw == ('event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                   '"delta":{"type":"text_delta","text":"naïve\\nline"}}\n\n').encode()
