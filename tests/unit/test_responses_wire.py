"""The Responses wire translators, without sockets: body -> chat body, chat chunks -> events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.openai.responses import chat_body, parse_responses
from appliance.openai.responses_output import response_from_chat
from appliance.openai.responses_stream import ResponsesStream
from appliance.wire.errors import WireError

CODEX_LIKE: Any = {
    "model": "coder", "stream": True, "store": False, "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "k", "reasoning": {"summary": "auto"}, "tool_choice": "auto", "parallel_tool_calls": True,
    "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Skills."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "run ls"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xx"},
        {"type": "function_call", "call_id": "call_1", "name": "close_agent", "namespace": "agents",
         "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "closed"},
    ],
    "tools": [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
              {"type": "namespace", "name": "agents", "tools": [{"type": "function", "name": "close_agent"}]},
              {"type": "web_search"}],
}


def parse(body: Any) -> dict[str, Any]:
    return chat_body(parse_responses(body))


def test_a_codex_request_becomes_one_chat_body() -> None:
    call = parse_responses(CODEX_LIKE)
    body = chat_body(call)
    assert not call.store and call.stream
    assert body["messages"] == [
        {"role": "system", "content": "You are Codex.\n\nSkills."},
        {"role": "user", "content": "run ls"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "agents__close_agent", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "closed"}]
    assert [t["function"]["name"] for t in body["tools"]] == ["exec_command", "agents__close_agent"]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True
    assert "reasoning_effort" not in body and "include" not in body and "prompt_cache_key" not in body
    assert call.warnings == ("hosted tools dropped (a chat backend cannot run them): web_search",)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m"}, "input"),
    ({"model": "m", "input": "x", "background": True}, "background"),
    ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type"),
    ({"model": "m", "input": "x", "temperature": 3}, "temperature"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format.schema"),
])
def test_refusals_name_the_field(body: Any, param: str) -> None:
    with pytest.raises(WireError) as caught:
        parse(body)
    assert caught.value.param == param


def test_a_namespaced_call_is_split_back_and_images_become_image_parts() -> None:
    call = parse_responses({**CODEX_LIKE, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "look"}, {"type": "input_image", "image_url": "data:image/png;base64,AA"}]}]})
    assert chat_body(call)["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "auto"}}]}]
    completion = {"choices": [{"finish_reason": "tool_calls", "message": {"role": "assistant", "content": None,
                  "tool_calls": [{"id": "c9", "function": {"name": "agents__close_agent", "arguments": "{}"}}]}}],
                  "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    response = response_from_chat(call, completion, "resp_1", 0, None)
    [item] = response["output"]
    assert (item["type"], item["namespace"], item["name"], item["call_id"]) == (
        "function_call", "agents", "close_agent", "c9")
    assert response["usage"]["total_tokens"] == 7 and response["status"] == "completed"


def frames(raw: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for frame in b"".join(raw).split(b"\n\n"):
        if frame:
            kind, data = frame.split(b"\n")
            event = json.loads(data.removeprefix(b"data: "))
            assert kind == b"event: " + event["type"].encode()
            out.append(event)
    return out


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


def test_the_stream_opens_and_closes_items_in_order_with_contiguous_sequence_numbers() -> None:
    stream = ResponsesStream(parse_responses(CODEX_LIKE), "resp_1", 0, None)
    raw = stream.start()
    for chunk in [delta(reasoning_content="hmm"), delta(content="Let me"), delta(content=" look."),
                  delta(tool_calls=[{"index": 0, "id": "a", "function": {"name": "exec_command", "arguments": "{\"c"}}]),
                  delta(tool_calls=[{"index": 1, "id": "b", "function": {"name": "agents__close_agent",
                                                                           "arguments": "{}"}}]),
                  delta(tool_calls=[{"index": 0, "function": {"arguments": "md\": \"ls\"}"}}]),
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
                  {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}]:
        raw += stream.feed(chunk)
    raw += stream.close()
    response = stream.response()
    raw.append(stream.completed(response))
    events = frames(raw)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events if e["type"].startswith("response.output_item")] == [
        "response.output_item.added", "response.output_item.done",   # reasoning
        "response.output_item.added", "response.output_item.done",   # message, closed by the first call
        "response.output_item.added", "response.output_item.added",  # both calls ...
        "response.output_item.done", "response.output_item.done"]    # ... closed at the end
    assert [i["type"] for i in response["output"]] == ["reasoning", "message", "function_call", "function_call"]
    assert response["output"][1]["content"][0]["text"] == "Let me look."
    assert json.loads(response["output"][2]["arguments"]) == {"cmd": "ls"}
    assert response["output"][3]["namespace"] == "agents"
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["usage"]["output_tokens"] == 4


def test_a_cut_answer_is_incomplete_and_a_failure_keeps_the_finished_items() -> None:
    stream = ResponsesStream(parse_responses({"model": "m", "input": "x"}), "resp_1", 0, None)
    stream.feed(delta(content="partial"))
    stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    stream.close()
    response = stream.response()
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert frames([stream.completed(response)])[0]["type"] == "response.incomplete"

    broken = ResponsesStream(parse_responses({"model": "m", "input": "x"}), "resp_2", 0, None)
    broken.feed(delta(content="half"))
    failed, frame = broken.failure("backend_unavailable", "the backend went away")
    assert failed["status"] == "failed" and failed["output"] == []  # the open message was never finished
    assert frames([frame])[0]["response"]["error"] == {"code": "backend_unavailable", "message": "the backend went away"}


def test_images_in_tool_results_follow_the_tool_messages_as_a_user_message() -> None:
    image = {"type": "input_image", "image_url": "data:image/png;base64,AA"}
    messages = parse({"model": "m", "input": [
        {"type": "function_call", "call_id": "a", "name": "view_image", "arguments": "{}"},
        {"type": "function_call", "call_id": "b", "name": "view_image", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "a", "output": [image]},
        {"type": "function_call_output", "call_id": "b", "output": [{"type": "input_text", "text": "none"}]},
        {"role": "user", "content": "what is it?"}]})["messages"]
    assert [m["role"] for m in messages] == ["assistant", "tool", "tool", "user", "user"]
    assert messages[1]["content"] == "(1 image in the next message)" and messages[2]["content"] == "none"
    assert messages[3]["content"] == [{"type": "image_url", "image_url": {"url": image["image_url"], "detail": "auto"}}]
