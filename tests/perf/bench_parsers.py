"""The output parser chain's cost per streamed chunk: a 500-token stream through the gateway's
relay (`ChatService.open_stream`, the OpenAI path, in process, from an in-memory backend), the
chain off against on in the same run.

    python -m tests.perf.bench_parsers [--tokens 500] [--runs 7] [--streams 40]

Each case relays `--streams` streams per run; the table gives the median (and the best) over
runs of the relay's CPU time per chunk (decode, chain, tally, re-encode where the chain changed a chunk),
what the chain adds to it against "off" (no chain in the service at all), and one stream's
total. "cloud backend" is a chain that is configured but has nothing to do (not a local kind,
no stage on): it must cost what "off" costs. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from appliance.domain.chat import ChatService
from appliance.domain.chat_request import ChatRequest
from appliance.domain.models import ModelDirectory
from appliance.domain.parsers.policy import Parsers
from appliance.domain.parsers.stages import default_stages
from appliance.domain.ports import Capabilities, UpstreamReply
from appliance.domain.routing import ModelRouter, RouteRule

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def chunks(tokens: int, *, think: int = 0, call: bool = False) -> list[bytes]:
    """A stream of `tokens` one-word content chunks (the first `think` inside a think block,
    the answer ending in a Hermes tool call written as text), then finish and usage chunks."""
    words = [f" tok{i}" for i in range(tokens)]
    if think:
        words[0] = "<think>" + words[0]
        words[think - 1] += "</think>\n\n"
    if call:
        text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
        words[-12:] = [text[k:k + 7] for k in range(0, len(text), 7)][:12]
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return orjson.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                  "logprobs": None}]})

    out = [event({"role": "assistant", "content": ""})] + [event({"content": w}) for w in words]
    out.append(event({}, "stop"))
    out.append(orjson.dumps({**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": tokens,
                                                              "total_tokens": tokens + 5}}))
    return out


class Upstream:
    def __init__(self, events: list[bytes]) -> None:
        self._events = events

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[bytes]:
        for data in self._events:
            yield data

    async def aclose(self) -> None:
        return None


class Backend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.capabilities = Capabilities()
        self.events: list[bytes] = []

    async def complete(self, payload: Mapping[str, Any]) -> UpstreamReply:
        raise NotImplementedError

    async def open_stream(self, payload: Mapping[str, Any]) -> Upstream:
        return Upstream(self.events)

    async def list_models(self) -> list[dict[str, Any]]:
        return []

    async def count_tokens(self, payload: Mapping[str, Any]) -> int | None:
        return None

    async def loaded_models(self) -> frozenset[str] | None:
        return None


class Codec:
    loads = staticmethod(orjson.loads)
    dumps = staticmethod(orjson.dumps)


def service(kind: str | None, backend: Backend) -> ChatService:
    backends = {"b": backend}
    router = ModelRouter([], [RouteRule("*", "b")])
    parsers = None if kind is None else Parsers({"b": default_stages(kind)})
    return ChatService(router, backends, ModelDirectory(router, backends, ttl_s=60), Codec(), status_of=lambda e: 500,
                       parsers=parsers)


async def relay(chat: ChatService, body: dict[str, Any], streams: int) -> tuple[float, int]:
    frames = 0
    started = time.process_time()  # CPU, not wall: on a shared machine the wall clock counts others' work
    for _ in range(streams):
        req = ChatRequest(body, "m", True, "cid")
        plan = await chat.plan(req)
        stream = await chat.open_stream(req, plan)
        async for _frame in stream:
            frames += 1
    return time.process_time() - started, frames


CASES: list[tuple[str, str | None, dict[str, Any]]] = [
    ("off (no chain)", None, {}),
    ("cloud backend, tools offered", "openai", {"tools": TOOLS}),
    ("local, no tools, plain answer", "vllm", {}),
    ("local, no tools, think block (100 tok)", "vllm", {"think": 100}),
    ("local, tools offered, plain answer", "vllm", {"tools": TOOLS}),
    ("local, tools offered, think + text call", "vllm", {"tools": TOOLS, "think": 100, "call": True}),
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--streams", type=int, default=40)
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name, _, _ in CASES}
    events = {name: chunks(args.tokens, think=opts.get("think", 0), call=opts.get("call", False))
              for name, _, opts in CASES}
    for _ in range(args.runs):
        for name, kind, opts in CASES:  # interleaved: a busy machine's drift hits every case alike
            backend = Backend("b")
            backend.events = events[name]
            chat = service(kind, backend)
            body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            if "tools" in opts:
                body["tools"] = opts["tools"]
            elapsed, _ = asyncio.run(relay(chat, body, args.streams))
            results[name].append(elapsed / (args.streams * len(events[name])) * 1e6)
    off = statistics.median(results[CASES[0][0]])
    print(f"\nparser chain: {args.tokens}-token streams ({args.tokens + 3} upstream chunks), "
          f"{args.streams} streams x {args.runs} runs, median per chunk\n")
    best_off = min(results[CASES[0][0]])
    print("| case | us/chunk median | added | ratio | us/chunk best | added | stream total ms (median) |")
    print("|---|---|---|---|---|---|---|")
    for name, _, _ in CASES:
        per, best = statistics.median(results[name]), min(results[name])
        total = per * len(events[name]) / 1000
        print(f"| {name} | {per:.2f} | {per - off:+.2f} | {per / off:.2f} | {best:.2f} | {best - best_off:+.2f} "
              f"| {total:.2f} |")
    print(json.dumps({name: round(statistics.median(v), 3) for name, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
