"""The Ollama translation, with plain dicts: requests, replies, the NDJSON stream, models."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from appliance.ollama.chat import parse_chat, parse_generate
from appliance.ollama.embed import parse_embed
from appliance.ollama.models import show_response, tags_response
from appliance.ollama.replies import ReplyStream, Timings, reply, timestamp
from appliance.wire.errors import WireError

USER = {"role": "user", "content": "hi"}


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_chat_streams_unless_told_not_to_and_maps_options() -> None:
    call = parse_chat({"model": "m", "messages": [USER], "options": {
        "temperature": 0, "num_predict": -1, "top_k": 40, "min_p": 0.05, "stop": "END", "num_ctx": 4096}})
    assert call.stream is True and call.body is not None
    assert call.body == {"model": "m", "messages": [USER], "stream": True, "temperature": 0, "stop": ["END"]}
    assert call.extensions == {"top_k": 40, "min_p": 0.05}  # num_predict -1 (no limit) and num_ctx dropped
    assert parse_chat({"model": "m", "messages": [USER], "stream": False}).stream is False


def test_an_empty_chat_or_prompt_is_a_load_request() -> None:
    assert parse_chat({"model": "m"}).body is None
    assert parse_generate({"model": "m", "prompt": "", "keep_alive": 0}).keep_alive == 0
    assert parse_generate({"model": "m", "prompt": ""}).body is None


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [USER]}, "model"),
    ({"model": "m", "messages": "hi"}, "messages"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"model": "m", "messages": [USER], "stream": "yes"}, "stream"),
    ({"model": "m", "messages": [USER], "format": "xml"}, "format"),
    ({"model": "m", "messages": [USER], "options": {"seed": 1.5}}, "options.seed"),
    ({"model": "m", "messages": [USER], "options": {"temperature": True}}, "options.temperature"),
    ({"model": "m", "messages": [{"role": "user", "content": "x", "images": [1]}]}, "messages[0].images"),
])
def test_bad_chat_bodies_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(WireError) as err:
        parse_chat(body)
    assert err.value.param == param


def test_generate_refuses_what_a_chat_api_cannot_do() -> None:
    for field, value in (("raw", True), ("suffix", "return x")):
        with pytest.raises(WireError) as err:
            parse_generate({"model": "m", "prompt": "def f():", field: value})
        assert err.value.param == field
    call = parse_generate({"model": "m", "prompt": "p", "system": "s", "template": "{{ .Prompt }}", "context": [1]})
    assert call.body is not None and call.body["messages"] == [{"role": "system", "content": "s"},
                                                               {"role": "user", "content": "p"}]


def test_tool_messages_are_matched_to_the_calls_they_answer() -> None:
    call = parse_chat({"model": "m", "messages": [
        USER,
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "a", "arguments": {"x": 1}}},
            {"id": "given", "function": {"name": "b", "arguments": {}}}]},
        {"role": "tool", "tool_name": "b", "content": "B"},
        {"role": "tool", "content": "A"}]})
    assert call.body is not None
    _, assistant, answer_b, answer_a = call.body["messages"]
    assert assistant == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1_0", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
        {"id": "given", "type": "function", "function": {"name": "b", "arguments": "{}"}}]}
    assert answer_b["tool_call_id"] == "given" and answer_a["tool_call_id"] == "call_1_0"


def test_images_are_named_by_their_bytes() -> None:
    jpeg = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(20)).decode()
    call = parse_generate({"model": "m", "prompt": "", "images": [jpeg]})
    assert call.body is not None
    assert call.body["messages"][0]["content"] == [{"type": "image_url",
                                                    "image_url": {"url": f"data:image/jpeg;base64,{jpeg}"}}]


def test_reply_turns_tool_arguments_into_objects() -> None:
    completion = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"q": "x"}'}},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "not json"}}]},
        "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    out = reply(completion, chat=True, model="m", created_at="t", timings=Timings(total_ns=10, eval_ns=4))
    assert out["message"]["tool_calls"] == [
        {"id": "c1", "function": {"index": 0, "name": "f", "arguments": {"q": "x"}}},
        {"id": "c2", "function": {"index": 1, "name": "g", "arguments": {"_unparsed_arguments": "not json"}}}]
    assert out["done"] is True and out["done_reason"] == "stop"
    assert (out["prompt_eval_count"], out["eval_count"], out["total_duration"], out["eval_duration"]) == (5, 2, 10, 4)
    assert "prompt_eval_duration" not in out


def test_stream_sends_text_as_it_comes_and_tool_calls_whole() -> None:
    ticks = iter([1.0, 3.0])  # first token, end
    stream = ReplyStream(chat=True, model="m", started=0.5, clock=lambda: next(ticks), wall=lambda: 0.0)
    assert stream.feed(chunk({"role": "assistant", "content": ""})) == []
    [line] = stream.feed(chunk({"content": "Hel"}))
    assert line == {"model": "m", "created_at": "1970-01-01T00:00:00.000000Z",
                    "message": {"role": "assistant", "content": "Hel"}, "done": False}
    assert stream.feed(chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a"'}}]})) == []
    assert stream.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}, "tool_calls")) == []
    assert stream.feed({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == []
    calls, last = stream.finish()
    assert calls["done"] is False
    assert calls["message"]["tool_calls"] == [{"id": "c", "function": {"index": 0, "name": "f", "arguments": {"a": 1}}}]
    assert last["done"] is True and last["done_reason"] == "stop" and last["message"]["content"] == ""
    assert (last["prompt_eval_count"], last["eval_count"]) == (3, 4)
    assert (last["total_duration"], last["prompt_eval_duration"], last["eval_duration"]) == (2_500_000_000, 500_000_000,
                                                                                             2_000_000_000)


def test_generate_stream_says_length_when_cut() -> None:
    stream = ReplyStream(chat=False, model="m", started=0.0)
    assert stream.feed(chunk({"content": "a"}))[0]["response"] == "a"
    stream.feed(chunk({}, "length"))
    [last] = stream.finish()
    assert last["response"] == "" and last["done_reason"] == "length"


def test_models_in_ollama_shapes() -> None:
    listing = [{"id": "coder", "object": "model", "created": 0, "owned_by": "me", "context_length": 32768}]
    [tag] = tags_response(listing)["models"]
    assert tag["name"] == tag["model"] == "coder" and tag["modified_at"] == timestamp(0) and len(tag["digest"]) == 64
    shown = show_response(listing[0], ("code", "tools", "reasoning"))
    assert shown["capabilities"] == ["completion", "tools", "thinking"]
    assert shown["model_info"] == {"general.architecture": "appliance", "appliance.context_length": 32768}


def test_embed_inputs() -> None:
    assert parse_embed({"input": "x"}, 10).inputs == ["x"]
    with pytest.raises(WireError):
        parse_embed({"input": ["a", "b"]}, 1)
    with pytest.raises(WireError):
        parse_embed({"input": [""]}, 10)
