"""Input that used to crash a request (a 500, or a 502 from a body nobody could re-encode) is
refused with `WireError` where each dialect parses it (issue 13), and valid input still passes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from appliance.anthropic.messages import parse_messages
from appliance.ollama.chat import parse_chat, parse_generate
from appliance.ollama.embed import parse_embed
from appliance.ollama.embed import parse_embeddings as parse_ollama_embeddings
from appliance.openai.chat import validate_chat
from appliance.openai.embeddings import parse_embeddings, parse_rerank
from appliance.wire.bounds import MAX_DEPTH, MAX_MESSAGES
from appliance.wire.errors import WireError
from tests.unit.test_wire_bounds import nested

USER = {"role": "user", "content": "hi"}
OPENAI: dict[str, Any] = {"model": "m", "messages": [USER]}
ANTHROPIC: dict[str, Any] = {"model": "m", "max_tokens": 16, "messages": [USER]}
OLLAMA: dict[str, Any] = {"model": "m", "messages": [USER]}
GENERATE: dict[str, Any] = {"model": "m", "prompt": "hi"}

# Every parser, with a valid body and the field an unknown deep value can ride in.
PARSERS: list[tuple[str, Callable[[Any], Any], dict[str, Any]]] = [
    ("openai chat", validate_chat, OPENAI),
    ("anthropic messages", parse_messages, ANTHROPIC),
    ("ollama chat", parse_chat, OLLAMA),
    ("ollama generate", parse_generate, GENERATE),
    ("openai embeddings", lambda b: parse_embeddings(b, 16), {"input": "hi"}),
    ("rerank", lambda b: parse_rerank(b, 16), {"query": "q", "documents": ["d"]}),
    ("ollama embed", lambda b: parse_embed(b, 16), {"input": "hi"}),
    ("ollama embeddings", parse_ollama_embeddings, {"prompt": "hi"}),
]


@pytest.mark.parametrize("role", [["user"], {"user": 1}, [], {}])
@pytest.mark.parametrize(("parse", "body"), [(validate_chat, OPENAI), (parse_chat, OLLAMA), (parse_messages, ANTHROPIC)])
def test_a_role_that_is_an_array_or_object_is_refused_not_hashed(parse: Callable[[Any], Any], body: dict[str, Any],
                                                                 role: Any) -> None:
    # Used to be `TypeError: unhashable type` (a 500) on /v1/chat/completions and /api/chat.
    with pytest.raises(WireError) as err:
        parse({**body, "messages": [{"role": role, "content": "hi"}]})
    assert err.value.param == "messages[0].role"


@pytest.mark.parametrize("kind", [["auto"], {"auto": 1}])
def test_an_anthropic_tool_choice_type_that_is_not_a_string_is_refused(kind: Any) -> None:
    with pytest.raises(WireError) as err:
        parse_messages({**ANTHROPIC, "tool_choice": {"type": kind}})
    assert err.value.param == "tool_choice"


@pytest.mark.parametrize("levels", [256, 300, 1000, 1024])
@pytest.mark.parametrize(("name", "parse", "body"), PARSERS, ids=[p[0] for p in PARSERS])
def test_a_valid_body_nested_past_the_limit_is_refused(name: str, parse: Callable[[Any], Any], body: dict[str, Any],
                                                       levels: int) -> None:
    # Used to be a 502 "backend unreachable: TypeError": orjson writes no more than 254 levels.
    with pytest.raises(WireError) as err:
        parse({**body, "extra": nested(levels)})
    assert err.value.param == "extra"


@pytest.mark.parametrize(("name", "parse", "body"), PARSERS, ids=[p[0] for p in PARSERS])
def test_a_body_at_the_depth_limit_still_passes(name: str, parse: Callable[[Any], Any], body: dict[str, Any]) -> None:
    parse({**body, "extra": nested(MAX_DEPTH - 1)})


def test_deep_values_inside_known_fields_are_refused_too() -> None:
    schema = {"type": "object", "properties": {"x": nested(300, "object")}}
    with pytest.raises(WireError) as err:
        parse_chat({**OLLAMA, "format": schema})  # went upstream as json_schema: a 502
    assert err.value.param == "format"
    with pytest.raises(WireError):
        validate_chat({**OPENAI, "messages": [{"role": "user", "content": [nested(300)]}]})
    call = {"type": "tool_use", "id": "t", "name": "f", "input": nested(1000, "object")}
    with pytest.raises(WireError):  # json.dumps of the input would have raised RecursionError
        parse_messages({**ANTHROPIC, "messages": [USER, {"role": "assistant", "content": [call]}]})


@pytest.mark.parametrize(("parse", "body"), [(validate_chat, OPENAI), (parse_chat, OLLAMA), (parse_messages, ANTHROPIC)])
def test_message_count_is_bounded(parse: Callable[..., Any], body: dict[str, Any]) -> None:
    parse({**body, "messages": [USER] * 3}, max_messages=3)
    with pytest.raises(WireError) as err:
        parse({**body, "messages": [USER] * 4}, max_messages=3)
    assert err.value.param == "messages"
    with pytest.raises(WireError):
        parse({**body, "messages": [USER] * (MAX_MESSAGES + 1)})


@pytest.mark.parametrize("stop", [5, [1], ["a", None], {"a": "b"}])
def test_openai_stop_must_be_strings(stop: Any) -> None:
    with pytest.raises(WireError) as err:
        validate_chat({**OPENAI, "stop": stop})
    assert err.value.param == "stop"


def test_valid_bodies_still_pass_unknown_fields_included() -> None:
    assert validate_chat({**OPENAI, "stop": ["END", "STOP"], "future_field": {"a": [1, {"b": 2}]}}) == ("m", False)
    assert validate_chat({**OPENAI, "stop": "END", "stream": True}) == ("m", True)
    assert parse_messages({**ANTHROPIC, "tool_choice": {"type": "any"}}).body["tool_choice"] == "required"
    many = [USER, {"role": "assistant", "content": "ok"}] * 500
    assert len(parse_chat({**OLLAMA, "messages": many}).body["messages"]) == 1000  # type: ignore[index]
