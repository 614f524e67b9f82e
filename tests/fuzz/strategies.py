"""Hypothesis strategies for hostile request bodies: each endpoint's schema, valid, then with
one or two nodes at any depth replaced by a wrong value or removed (every JSON type, NUL
bytes, integers past 64 bits, NaN, unicode line separators, JSON nested past what any encoder
takes), plus arbitrary JSON; and one rich valid body per endpoint (`CANONICAL`) for a sweep
that tries every `HOSTILE` value in every node.

Bodies are Python values; `encode` makes them request bytes. JSON nested deeper than Python's
own encoder can write is drawn as a `Deep` marker and written out as text by `encode`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from hypothesis import strategies as st

# Nesting depths around every limit that matters: ours (64), what orjson writes (254) and reads (1024).
DEPTHS: Final = (2, 16, 63, 64, 65, 100, 128, 200, 254, 255, 256, 300, 512, 1000, 1023, 1024, 1025, 2000)
HUGE_INTS: Final = (2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**20, 10**400, -(10**30))
# Names the fake LLM's catalog routes (alias, rename, glob, discovered) and some it does not.
MODELS: Final = ("fake-model", "coder", "qwen3-8b", "qwen3-x", "discovered-only", "slow-m", "nope", "")
WORKSPACES: Final = ("fuzz", "fuzz-empty", "a", "x" * 64, "x" * 65, "bad ws", ".dot", "ws\x00nul", "ws\n",
                     "ünï", "..", "%00", "a/b")
# The one body key the fake LLM reads as its own knobs: never drawn.
RESERVED: Final = frozenset({"fake"})


@dataclass(frozen=True, slots=True)
class Deep:
    """A value nested `depth` levels deep in arrays (`kind` "l") or objects ("o")."""

    depth: int
    kind: str


_DEEP_MARK = re.compile(r'"@@deep:(\d+):([lo])@@"')


def _nested_text(depth: int, kind: str) -> str:
    return "[" * depth + "0" + "]" * depth if kind == "l" else '{"k":' * depth + "0" + "}" * depth


def encode(body: Any, *, ascii_only: bool = True) -> bytes:
    """The body as JSON bytes. Python's encoder writes what orjson will not read (big integers,
    NaN, lone surrogates escaped): the gateway must refuse those with 400, not fail on them."""

    def mark(value: Any) -> str:
        if isinstance(value, Deep):
            return f"@@deep:{value.depth}:{value.kind}@@"
        raise TypeError(type(value).__name__)

    text = json.dumps(body, ensure_ascii=ascii_only, default=mark)
    text = _DEEP_MARK.sub(lambda m: _nested_text(int(m.group(1)), m.group(2)), text)
    return text.encode("utf-8", "surrogatepass")


def mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any], odds: int = 4) -> st.SearchStrategy[Any]:
    """`usual` `odds` times out of `odds + 1`, else `other` (`one_of` would drop repeated
    branches, so it cannot weight)."""
    return st.integers(0, odds).flatmap(lambda i: other if i == odds else usual)


short_text = st.text(max_size=24)
nul_text = st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=8), st.text(max_size=8))
surrogate_text = st.text(st.characters(categories=["Cs", "Ll"]), min_size=1, max_size=4)
huge_int = st.sampled_from(HUGE_INTS)
deep = st.builds(Deep, st.sampled_from(DEPTHS), st.sampled_from("lo"))

# NaN, infinities and lone surrogates make JSON orjson will not read: a few, not half the bodies.
scalar = st.one_of(st.none(), st.booleans(), st.integers(), huge_int, st.floats(allow_nan=False, allow_infinity=False),
                   short_text, nul_text, mostly(short_text, st.one_of(st.floats(), surrogate_text), 6))
json_value = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(short_text, inner, max_size=4)), max_leaves=12)
# A value of any type: what a field gets when it is not given a valid one.
wrong = st.one_of(scalar, deep, st.lists(scalar, max_size=3), st.dictionaries(short_text, scalar, max_size=3),
                  json_value)


def shaped(required: Mapping[str, st.SearchStrategy[Any]],
           optional: Mapping[str, st.SearchStrategy[Any]] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Valid objects of this schema, with unknown fields now and then (which must pass
    through, not break anything). `mutated` makes them wrong."""
    known = set(required) | set(optional or {}) | RESERVED
    extras = st.dictionaries(short_text.filter(lambda k: k not in known), json_value, max_size=2)
    base = st.fixed_dictionaries(dict(required), optional=dict(optional or {}))
    return st.builds(lambda b, e: {**e, **b}, base, mostly(st.just({}), extras, 3))


def listing(item: st.SearchStrategy[Any], max_size: int = 4) -> st.SearchStrategy[Any]:
    return st.lists(item, min_size=1, max_size=max_size)


# What a mutation puts in place of a node: every JSON type, and the values that crashed before.
HOSTILE: Final = (None, True, 0, -1, 1.5, 2**63, 2**64, 10**20, "", "\x00", "a\x00b", "\u2028", [], {}, ["user"],
                  {"role": "user"}, [[[]]], Deep(255, "l"), Deep(300, "o"), Deep(1024, "l"))
GONE: Final = object()  # a mutation that removes the node
hostile = st.one_of(st.sampled_from(HOSTILE), wrong)


def paths(body: Any) -> list[tuple[Any, ...]]:
    """Where every node below the root is, outer ones first."""
    out: list[tuple[Any, ...]] = []
    level: list[tuple[tuple[Any, ...], Any]] = [((), body)]
    while level:
        below = []
        for path, node in level:
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for key, child in items:
                out.append((*path, key))
                below.append(((*path, key), child))
        level = below
    return out


def mutate(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of `body` with the node at `path` replaced by `value` (or removed: `GONE`)."""
    body = copy.deepcopy(body)
    *parents, last = path
    parent = body
    for key in parents:
        parent = parent[key]
    if value is GONE:
        del parent[last]
    else:
        parent[last] = value
    return body


def _mutation(body: Any) -> st.SearchStrategy[Any]:
    where = paths(body)
    if not where:
        return hostile
    # A seeded Random picks the node: `sampled_from` would mostly pick the first (the model).
    return st.builds(lambda rnd, value: mutate(body, rnd.choice(where), value), st.randoms(use_true_random=True),
                     st.one_of(st.just(GONE), hostile))


def mutated(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Bodies of `strategy` with one node (or, a time in three, two), at any depth, replaced
    by a wrong value or removed: the rest stays valid, so the wrong value reaches the code
    that reads it."""
    once = strategy.flatmap(_mutation)
    return mostly(once, once.flatmap(_mutation), 2)


def some_json(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the endpoint's bodies mutated; else valid ones, any JSON at all, or one deep value."""
    return st.integers(0, 9).flatmap(lambda i: mutated(strategy) if i < 7 else strategy if i < 8
                                     else st.one_of(json_value, deep))


model = st.one_of(st.sampled_from(MODELS), short_text.map(lambda s: f"qwen3-{s}"))
tiny_int = st.integers(min_value=1, max_value=40)
unit = st.floats(min_value=0, max_value=1)
schema = st.fixed_dictionaries({"type": st.just("object")}, optional={
    "properties": st.dictionaries(short_text, st.fixed_dictionaries({"type": st.sampled_from(["string", "integer"])}),
                                  max_size=2),
    "deep": deep})
base64_image = st.sampled_from(["iVBORw0KGgo=", "/9j/4AAQ", "R0lGODlh", "!!notbase64", ""])

# OpenAI chat completions
_part = shaped({"type": st.sampled_from(["text", "image_url"]), "text": short_text},
               {"image_url": shaped({"url": short_text})})
_openai_call = shaped({"id": short_text, "type": st.just("function"),
                       "function": shaped({"name": short_text, "arguments": short_text})})
_openai_message = shaped({"role": st.sampled_from(["system", "developer", "user", "assistant", "tool"]),
                          "content": st.one_of(short_text, st.lists(_part, max_size=3), st.none())},
                         {"name": short_text, "tool_calls": st.lists(_openai_call, max_size=2),
                          "tool_call_id": short_text})
_openai_tool = shaped({"type": st.just("function"),
                       "function": shaped({"name": short_text}, {"description": short_text, "parameters": schema})})
openai_chat = shaped(
    {"model": model, "messages": listing(_openai_message)},
    {"stream": st.booleans(), "stream_options": shaped({}, {"include_usage": st.booleans()}),
     "temperature": st.floats(0, 2), "top_p": unit, "max_tokens": tiny_int, "max_completion_tokens": tiny_int,
     "n": st.just(1), "stop": st.one_of(short_text, st.lists(short_text, max_size=4)), "seed": st.integers(0, 2**31),
     "tools": st.lists(_openai_tool, max_size=2), "tool_choice": st.sampled_from(["auto", "none", "required"]),
     "response_format": shaped({"type": st.sampled_from(["text", "json_object"])}), "user": short_text,
     "presence_penalty": st.floats(-2, 2), "logit_bias": st.dictionaries(short_text, st.integers(-100, 100)),
     "metadata": st.dictionaries(short_text, short_text, max_size=2)})

# Anthropic messages
_text_block = shaped({"type": st.just("text"), "text": short_text})
_blocks = st.lists(st.one_of(
    _text_block,
    shaped({"type": st.just("image"), "source": shaped({"type": st.sampled_from(["base64", "url"])},
                                                        {"media_type": st.just("image/png"), "data": base64_image,
                                                         "url": short_text})}),
    shaped({"type": st.just("tool_use"), "id": short_text, "name": short_text, "input": st.dictionaries(
        short_text, json_value, max_size=2)}),
    shaped({"type": st.just("tool_result"), "tool_use_id": short_text},
           {"content": st.one_of(short_text, st.lists(_text_block, max_size=2)), "is_error": st.booleans()}),
    shaped({"type": st.sampled_from(["thinking", "document", "server_tool_use"])})), max_size=3)
_anthropic_message = shaped({"role": st.sampled_from(["user", "assistant"]), "content": st.one_of(short_text, _blocks)})
anthropic_messages = shaped(
    {"model": model, "max_tokens": tiny_int, "messages": listing(_anthropic_message)},
    {"system": st.one_of(short_text, st.lists(_text_block, max_size=2)), "stream": st.booleans(),
     "stop_sequences": st.lists(short_text.filter(bool), max_size=3), "temperature": unit, "top_p": unit,
     "top_k": st.integers(0, 100), "metadata": shaped({}, {"user_id": short_text}),
     "tools": st.lists(shaped({"name": short_text, "input_schema": schema}, {"description": short_text,
                                                                              "type": st.just("custom")}), max_size=2),
     "tool_choice": shaped({"type": st.sampled_from(["auto", "any", "none", "tool"])},
                           {"name": short_text, "disable_parallel_tool_use": st.booleans()}),
     "thinking": shaped({"type": st.just("enabled"), "budget_tokens": tiny_int})})

# Ollama chat and generate
_options = shaped({}, {"temperature": unit, "top_p": unit, "seed": st.integers(0, 2**31), "num_predict": st.integers(-2, 40),
                       "top_k": st.integers(0, 100), "min_p": unit, "stop": st.one_of(short_text, st.lists(short_text)),
                       "num_ctx": st.integers(1, 8192)})
_ollama_call = shaped({"function": shaped({"name": short_text}, {"arguments": st.one_of(
    st.dictionaries(short_text, json_value, max_size=2), short_text)})}, {"id": short_text})
_ollama_message = shaped({"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": short_text},
                         {"images": st.lists(base64_image, max_size=2), "tool_calls": st.lists(_ollama_call, max_size=2),
                          "tool_name": short_text, "tool_call_id": short_text})
_ollama_common = {"stream": st.booleans(), "format": st.one_of(st.just("json"), schema), "options": _options,
                  "keep_alive": st.one_of(st.just(0), st.just("5m"), st.integers()), "think": st.booleans()}
ollama_chat = shaped({"model": model, "messages": st.lists(_ollama_message, max_size=4)},
                     {**_ollama_common, "tools": st.lists(_openai_tool, max_size=2)})
ollama_generate = shaped({"model": model, "prompt": short_text},
                         {**_ollama_common, "system": short_text, "images": st.lists(base64_image, max_size=2),
                          "raw": st.booleans(), "suffix": short_text, "template": short_text,
                          "context": st.lists(st.integers(0, 1000), max_size=3)})
ollama_show = shaped({"model": model}, {"name": model, "verbose": st.booleans()})

# Embeddings and rerank
_inputs = st.one_of(short_text, st.lists(short_text, max_size=4))
openai_embeddings = shaped({"input": _inputs}, {"model": short_text, "encoding_format": st.sampled_from(["float", "base64"]),
                                                "dimensions": st.integers(1, 400), "user": short_text})
rerank = shaped({"query": short_text, "documents": st.lists(st.one_of(short_text, shaped({"text": short_text})),
                                                            max_size=4)},
                {"model": short_text, "top_n": st.integers(1, 5), "return_documents": st.booleans()})
ollama_embed = shaped({"input": _inputs}, {"model": short_text, "dimensions": st.integers(1, 400),
                                           "truncate": st.booleans(), "keep_alive": st.just("5m")})
ollama_embeddings = shaped({"prompt": short_text}, {"model": short_text})

# Knowledge
workspace = mostly(st.sampled_from(WORKSPACES[:4]), st.one_of(st.sampled_from(WORKSPACES[4:]), st.text(max_size=70)), 2)
document_id = mostly(st.text(min_size=1, max_size=24), st.sampled_from(["", "x" * 512, "x" * 513, "a\x00b", "..", "é/è"]))
_metadata = st.one_of(st.dictionaries(short_text, json_value, max_size=4),
                      st.builds(lambda d: {"deep": d}, deep),
                      st.just({"big": "x" * 70_000}))
_document = shaped({"id": document_id, "text": st.one_of(st.text(min_size=3, max_size=40), st.just("word " * 50))},
                   {"metadata": _metadata})
documents = st.one_of(_document, listing(_document, 3), shaped({"documents": listing(_document, 3)}))
search = shaped({"query": short_text}, {"top_k": st.integers(1, 100), "mode": st.sampled_from(["dense", "text", "hybrid"]),
                                        "rerank": st.booleans()})
QUERY_VALUES: Final = ("", "0", "1", "1000", "1001", "99999999999999999999", str(2**63 - 1), str(2**63), "-1", "1e3",
                       "1.5", "٣", "²", "0x10", " 5", "\x00", "a")
query_param = st.one_of(st.integers(-5, 2000).map(str), st.sampled_from(QUERY_VALUES), st.text(max_size=6))

# One rich valid body per endpoint, for the sweep that puts every HOSTILE value (and nothing)
# in place of each of its nodes in turn: the systematic half of the fuzz.
PNG: Final = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGMAAQAABQABDQottAAAAABJRU5ErkJggg=="
_SCHEMA: Final = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CANONICAL: Final[dict[str, dict[str, Any]]] = {
    "/v1/chat/completions": {
        "model": "coder", "stream": False, "temperature": 0.5, "top_p": 0.9, "max_tokens": 20, "stop": ["END"],
        "seed": 7, "user": "u", "tool_choice": "auto", "response_format": {"type": "text"},
        "tools": [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": _SCHEMA}}],
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "hi"},
                                                  {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
                     {"role": "assistant", "content": None, "tool_calls": [
                         {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
                     {"role": "tool", "tool_call_id": "c1", "content": "sunny"}],
    },
    "/v1/messages": {
        "model": "coder", "max_tokens": 20, "stream": False, "system": [{"type": "text", "text": "be brief"}],
        "temperature": 0.5, "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"], "metadata": {"user_id": "u"},
        "tools": [{"name": "weather", "description": "d", "input_schema": _SCHEMA}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "messages": [{"role": "user", "content": [
                         {"type": "text", "text": "hi"},
                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
                     {"role": "assistant", "content": [{"type": "text", "text": "checking"},
                                                       {"type": "tool_use", "id": "t1", "name": "weather",
                                                        "input": {"city": "Oslo"}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": False,
                                                   "content": [{"type": "text", "text": "sunny"}]}]}],
    },
    "/api/chat": {
        "model": "coder", "stream": False, "format": _SCHEMA, "keep_alive": "5m",
        "options": {"temperature": 0.5, "top_p": 0.9, "seed": 7, "num_predict": 20, "top_k": 5, "stop": ["END"]},
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": _SCHEMA}}],
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "hi", "images": [PNG]},
                     {"role": "assistant", "content": "", "tool_calls": [
                         {"function": {"name": "weather", "arguments": {"city": "Oslo"}}}]},
                     {"role": "tool", "content": "sunny", "tool_name": "weather"}],
    },
    "/api/generate": {"model": "coder", "stream": False, "prompt": "hi", "system": "be brief", "images": [PNG],
                      "format": "json", "options": {"temperature": 0.5, "num_predict": 20, "stop": "END"}},
    "/api/show": {"model": "coder", "verbose": False},
    "/v1/embeddings": {"model": "m", "input": ["hello", "world"], "encoding_format": "float", "dimensions": 384},
    "/v1/rerank": {"model": "m", "query": "heat", "documents": ["heat pump", {"text": "router"}], "top_n": 1,
                   "return_documents": True},
    "/api/embed": {"model": "m", "input": ["hello", "world"], "dimensions": 384, "truncate": True},
    "/api/embeddings": {"model": "m", "prompt": "hello"},
    "/v1/knowledge/fuzz-sweep/documents": {"documents": [
        {"id": "a.md", "text": "The heat pump moves warmth.", "metadata": {"room": "utility", "tags": ["x"], "n": 1}}]},
    "/v1/knowledge/fuzz/search": {"query": "heat pump", "top_k": 3, "mode": "hybrid", "rerank": True},
}
