"""The official `openai` client, unchanged, against the gateway's `/v1/responses`: create (JSON
and stream), retrieve, delete, input_items, continuations, a function tool round trip, and the
refusals, in front of the fake LLM, with responses stored in a real PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import openai
import psycopg
import pytest

from tests.conftest import FakeLLM, Gateway

TEXT = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
WEATHER: Any = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def client(gw: Gateway) -> Any:
    """The official client, typed loosely: its strict TypedDicts would need a cast per call."""
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)


def error_of(caught: pytest.ExceptionInfo[openai.APIStatusError]) -> Any:
    """The error object of an OpenAI-shaped error body (the client unwraps `error`)."""
    return caught.value.body


def test_create_answers_with_text_usage_and_the_requested_model(stored_gateway: Gateway, llm: FakeLLM) -> None:
    raw = client(stored_gateway).responses.with_raw_response.create(
        model="coder", input="hello there", instructions="Be terse.", max_output_tokens=64, temperature=0.3,
        metadata={"ticket": "42"})
    reply = raw.parse()
    assert reply.id.startswith("resp_") and reply.object == "response" and reply.status == "completed"
    assert reply.model == "coder" and reply.output_text == TEXT
    assert [item.type for item in reply.output] == ["message"]
    assert reply.usage is not None and reply.usage.output_tokens == 8
    assert reply.usage.total_tokens == reply.usage.input_tokens + 8
    assert reply.metadata == {"ticket": "42"} and reply.instructions == "Be terse."
    assert raw.headers["x-appliance-backend"] == "local-vllm"
    sent = llm.requests()[-1]
    assert sent["model"] == "fake-model" and sent["max_tokens"] == 64 and sent["temperature"] == 0.3
    assert sent["messages"] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello there"}]


def test_stream_events_are_numbered_and_add_up_to_the_stored_response(stored_gateway: Gateway, llm: FakeLLM) -> None:
    gw = client(stored_gateway)
    events = list(gw.responses.create(model="coder", input="hello there", stream=True))
    kinds = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == TEXT and len(deltas) == 8
    final = events[-1].response
    assert final.status == "completed" and final.output_text == TEXT and final.usage.output_tokens == 8
    assert events[0].response.id == final.id and events[0].response.status == "in_progress"
    # Stored before response.completed went out: readable at once.
    assert gw.responses.retrieve(final.id).output_text == TEXT


def test_retrieve_input_items_pages_and_delete(stored_gateway: Gateway, llm: FakeLLM) -> None:
    gw = client(stored_gateway)
    created = gw.responses.create(model="coder", input=[
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
        {"role": "user", "content": [{"type": "input_text", "text": "three"}]}])
    assert gw.responses.retrieve(created.id).model_dump() == created.model_dump()

    newest = gw.responses.input_items.list(created.id)  # newest first by default, as OpenAI lists them
    assert [item.content[0].text for item in newest.data] == ["three", "two", "one"]
    first = gw.responses.input_items.list(created.id, order="asc", limit=2)
    assert [item.content[0].text for item in first.data] == ["one", "two"]
    assert first.has_more and first.last_id == first.data[-1].id
    rest = gw.responses.input_items.list(created.id, order="asc", limit=2, after=first.last_id)
    assert [item.content[0].text for item in rest.data] == ["three"] and not rest.has_more

    gw.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as caught:
        gw.responses.retrieve(created.id)
    assert error_of(caught)["type"] == "invalid_request_error"
    assert created.id in error_of(caught)["message"]
    with pytest.raises(openai.NotFoundError):
        gw.responses.delete(created.id)


def test_previous_response_id_continues_the_conversation(stored_gateway: Gateway, llm: FakeLLM) -> None:
    gw = client(stored_gateway)
    first = gw.responses.create(model="coder", input="my name is Ada", instructions="Old instructions.")
    llm.control(reply="Your name is Ada")
    second = gw.responses.create(model="coder", input="what is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.output_text == "Your name is Ada"
    assert llm.requests()[-1]["messages"] == [  # instructions are not carried over, as OpenAI does
        {"role": "user", "content": "my name is Ada"}, {"role": "assistant", "content": TEXT},
        {"role": "user", "content": "what is my name?"}]
    third = gw.responses.create(model="coder", input="and again?", previous_response_id=second.id)
    assert [m["content"] for m in llm.requests()[-1]["messages"]] == [
        "my name is Ada", TEXT, "what is my name?", "Your name is Ada", "and again?"]
    assert third.status == "completed"


def test_a_function_tool_round_trip(stored_gateway: Gateway, llm: FakeLLM) -> None:
    gw = client(stored_gateway)
    llm.control(tool_call={"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                after_tool={"tool_call": None, "reply": "It is sunny in Oslo"})
    asked = gw.responses.create(model="coder", input="weather in Oslo?", tools=WEATHER, tool_choice="auto")
    [call] = asked.output
    assert call.type == "function_call" and call.name == "get_weather" and call.id.startswith("fc_")
    assert json.loads(call.arguments) == {"city": "Oslo"}
    sent = llm.requests()[-1]
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tool_choice"] == "auto"

    answer = gw.responses.create(model="coder", previous_response_id=asked.id, tools=WEATHER, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}])
    assert answer.output_text == "It is sunny in Oslo"
    messages = llm.requests()[-1]["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == call.call_id
    assert messages[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21 C"}


def test_streamed_function_call_arguments(stored_gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(tool_call={"name": "get_weather", "arguments": '{"city": "Bergen"}'}, fragments=3, tokens=0)
    events = list(client(stored_gateway).responses.create(model="coder", input="weather?", tools=WEATHER, stream=True))
    kinds = [e.type for e in events]
    assert kinds.count("response.function_call_arguments.delta") == 3
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    done = events[-3]
    assert json.loads(done.arguments) == {"city": "Bergen"}
    [item] = events[-1].response.output
    assert item.type == "function_call" and item.status == "completed" and item.arguments == done.arguments


def test_reasoning_content_becomes_a_reasoning_item(stored_gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(reasoning="the user greets me")
    gw = client(stored_gateway)
    reply = gw.responses.create(model="coder", input="hello")
    assert [item.type for item in reply.output] == ["reasoning", "message"]
    assert reply.output[0].content[0].text == "the user greets me"
    events = list(gw.responses.create(model="coder", input="hello", stream=True))
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert thought == "the user greets me"
    assert [i.type for i in events[-1].response.output] == ["reasoning", "message"]
    # A local model's inline <think> block, split off by the output parser chain, the same way.
    llm.control(think="pondering deeply")
    inline = gw.responses.create(model="coder", input="hello")
    assert [item.type for item in inline.output] == ["reasoning", "message"]
    assert inline.output[0].content[0].text == "pondering deeply" and inline.output_text == TEXT


def test_json_schema_format_reaches_the_backend_as_response_format(stored_gateway: Gateway, llm: FakeLLM) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    client(stored_gateway).responses.create(model="coder", input="a number", text={"format": {
        "type": "json_schema", "name": "number", "schema": schema, "strict": True}}, reasoning={"effort": "low"})
    sent = llm.requests()[-1]
    assert sent["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "number", "schema": schema, "strict": True}}
    assert sent["reasoning_effort"] == "low"


def test_store_false_is_not_retrievable(stored_gateway: Gateway, migrated_pg: str, llm: FakeLLM) -> None:
    gw = client(stored_gateway)
    reply = gw.responses.create(model="coder", input="secret", store=False)
    assert reply.output_text == TEXT and reply.store is False
    with pytest.raises(openai.NotFoundError):
        gw.responses.retrieve(reply.id)
    with psycopg.connect(migrated_pg) as conn:
        assert conn.execute("SELECT count(*) FROM api_responses WHERE id = %s", (reply.id,)).fetchone() == (0,)


def test_a_backend_failure_mid_stream_ends_with_response_failed(stored_gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(disconnect_after=3)
    gw = client(stored_gateway)
    events = list(gw.responses.create(model="coder", input="hello", stream=True))
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None and failed.error.message
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert gw.responses.retrieve(failed.id).status == "failed"


def test_unknown_previous_response_and_bad_input_are_400s(stored_gateway: Gateway, llm: FakeLLM) -> None:
    gw = client(stored_gateway)
    with pytest.raises(openai.BadRequestError) as unknown:
        gw.responses.create(model="coder", input="hi", previous_response_id="resp_nope")
    assert error_of(unknown)["param"] == "previous_response_id"
    assert error_of(unknown)["code"] == "previous_response_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        gw.responses.create(model="coder", input=[{"type": "message", "role": "robot", "content": "hi"}])
    assert error_of(bad) == {"message": error_of(bad)["message"], "type": "invalid_request_error",
                              "param": "input[0].role", "code": None}
    with pytest.raises(openai.BadRequestError) as no_input:
        gw.responses.create(model="coder", input=[])
    assert error_of(no_input)["param"] == "input"
    with pytest.raises(openai.NotFoundError) as model:
        gw.responses.create(model="no-such-model", input="hi")
    assert error_of(model)["code"] == "model_not_found"


def test_without_a_database_create_works_and_continuations_are_a_clear_400(gateway: Gateway, llm: FakeLLM) -> None:
    gw = client(gateway)
    raw = gw.responses.with_raw_response.create(model="coder", input="hello", extra_headers={"x-workspace": "notes"})
    assert raw.parse().output_text == TEXT
    assert "not stored" in raw.headers["x-appliance-warning"]
    # x-workspace takes the chat path's retrieval (here: no knowledge store, so its fallback).
    assert raw.headers["x-appliance-route"] == "direct" and "without retrieval" in raw.headers["x-appliance-warning"]
    with pytest.raises(openai.BadRequestError) as caught:
        gw.responses.create(model="coder", input="again", previous_response_id=raw.parse().id)
    assert error_of(caught)["param"] == "previous_response_id"
    assert "APPLIANCE_DATABASE_URL" in error_of(caught)["message"]
    with pytest.raises(openai.NotFoundError):
        gw.responses.retrieve(raw.parse().id)

