"""The parser chain's stages split anywhere: however a backend cuts an answer into chunks, the
result is the one the whole text gives, and no piece of a tag reaches the client."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.domain.parsers.chain import StreamChain
from appliance.domain.parsers.reasoning import ThinkSplitter
from appliance.domain.parsers.tool_text import RecoveredCall, ToolCallScanner
from tests.unit.test_parsers import CALLS, TOOLS

ANSWERS = [*CALLS.values(), "<think>a\n<b>c</think>\n\nHi <tool_call>", "  <think></think>plain",
           '<think>x</think>{"name": "get_weather", "arguments": {"city": "Oslo"}}', "no tags at all", "<", "[TOOL"]
TAG_BITS = ("<think", "think>", "<tool_call", "tool_call>", "[TOOL_CALLS", "python_tag")


def cut(text: str, points: list[int]) -> list[str]:
    marks = sorted({p % (len(text) + 1) for p in points} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(marks) if b > a]


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def through_chain(pieces: list[str]) -> tuple[str, str, list[tuple[str, str]], str | None]:
    chain = StreamChain(reasoning=True, tools=TOOLS)
    out = [chain.feed(chunk({"content": p})) for p in pieces] + [chain.feed(chunk({}, "stop")), chain.finish()]
    deltas = [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in out if c is not None]
    content = "".join(d.get("content") or "" for d, _ in deltas)
    reasoning = "".join(d.get("reasoning_content") or "" for d, _ in deltas)
    calls = [(c["function"]["name"], c["function"]["arguments"]) for d, _ in deltas for c in d.get("tool_calls", ())]
    return content, reasoning, calls, deltas[-1][1] if deltas else None


@settings(max_examples=150, deadline=None, database=None)
@given(st.sampled_from(ANSWERS), st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_split_gives_the_whole_texts_result(answer: str, points: list[int]) -> None:
    whole = through_chain([answer])
    split = through_chain(cut(answer, points))
    assert split == whole


@settings(max_examples=150, deadline=None, database=None)
@given(st.sampled_from([a for a in ANSWERS if "tool_call>" in a or "</think>" in a]),
       st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_no_piece_of_a_recognised_tag_reaches_the_content(answer: str, points: list[int]) -> None:
    chain = StreamChain(reasoning=True, tools=TOOLS)
    for piece in cut(answer, points):
        out = chain.feed(chunk({"content": piece}))
        content = (out or {"choices": [{"delta": {}}]})["choices"][0]["delta"].get("content") or ""
        if "Hi" not in answer:  # that one ends in a lone, unclosed `<tool_call>`: text at the end
            assert not any(bit in content for bit in TAG_BITS)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.sampled_from([*"<>[]{}/\"\\:, athinkolcTOL_CSpy|", "<think>", "</think>", "<tool_call>",
                                 "[TOOL_CALLS]"]), max_size=60).map("".join),
       st.lists(st.integers(min_value=0, max_value=100), max_size=8))
def test_text_that_is_no_call_comes_out_as_it_went_in(text: str, points: list[int]) -> None:
    scanner = ToolCallScanner(TOOLS)
    out: list[Any] = []
    for piece in cut(text, points):
        out += scanner.feed(piece)
    out += scanner.finish()
    if not any(isinstance(p, RecoveredCall) for p in out):
        assert "".join(out) == text
    splitter = ThinkSplitter()
    parts = [splitter.feed(p) for p in cut(text, points)] + [splitter.finish()]
    reasoning, content = "".join(r for r, _ in parts), "".join(c for _, c in parts)
    if not splitter.found:
        assert reasoning == "" and content == text
