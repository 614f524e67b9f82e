"""A fake OpenAI-compatible LLM server for tests and benchmarks: a real HTTP server process.

Run: `python -m tests.fake_llm --port N [--tokens 8] [--delay-ms 0] [--models a,b]`.

Knobs, per request (in the JSON body under `"fake": {...}`, which the gateway passes through
as an unknown field) or globally (`POST /_control` with the same keys):
  tokens: int            completion tokens to produce (words "tok0 tok1 ...")
  delay_ms: float        sleep before each streamed token (and once before a non-stream reply)
  status: int            answer with this HTTP status and an OpenAI error body
  retry_after: str       with `status`: the Retry-After header it sends
  message: str           with `status`: the error message (default "fake upstream error N")
  disconnect_after: int  stream this many tokens, then drop the connection without [DONE]
  reply: str             the content to return instead of generated tokens
  echo_context: bool     reply with the request's system messages (a RAG prompt's sources), so an
                         answer contains what retrieval found (tests/eval)
  tool_call: {name, arguments} or a list of them   answer with tool calls
  after_tool: {knobs}    knobs that apply instead when the request's last message is a tool result
                         (a tool round trip: call a tool first, then answer once it has run)
  reasoning: str         reasoning sent first, as vLLM does: `reasoning_content` in the message, or
                         one streamed delta per word
  fragments: int         stream each tool call's arguments in this many pieces (default 1)
  Local-model habits (a server without tool or reasoning parsers; docs/parsers.md):
  think: str             the answer starts with `<think>THINK</think>\n\n`, inline
  text_tool_call: {format, name, arguments} or a list   tool calls written into the answer text;
                         format: hermes (`<tool_call>{..}</tool_call>`), mistral (`[TOOL_CALLS] [..]`),
                         mistral_args (`[TOOL_CALLS]name[ARGS]{..}`), llama3 (`<|python_tag|>{"name",
                         "parameters"}`), json (a bare `{"name", "arguments"}`); after `reply` if given
  chunk_chars: int       stream the answer text in pieces of this many characters (tags split anywhere)
  replies: [str]         the n-th chat request since the knobs were set answers replies[n] (the last
                         one repeats): an invalid answer, then a valid one
  inject: [str]          raw SSE `data:` payloads sent after the first token, as given (malformed
                         chunks, non-JSON lines: what a broken backend streams)
  pad_bytes: int         add a `fake_pad` field of this many bytes to every streamed chunk: a long
                         stream in few events, without growing the answer's text
  huge_bytes: int        an answer of about this many bytes, written 1 MiB at a time (never held
                         whole): one JSON body, or (streamed) one SSE `data:` line after the first event
  huge_declared: bool    with `huge_bytes`, non-streamed: send its Content-Length (default: chunked)
  Guard models (a prompt that looks like Llama Guard 3's or ShieldGemma's, chat or completions):
  guard: str             the Llama Guard verdict (default "safe"; "unsafe\nS1,S10"); ShieldGemma
                         answers "Yes" when it starts with "unsafe", else "No"
  guard_when: str        the verdict only when the prompt contains this text; "safe" / "No" otherwise

The request itself is honoured as an OpenAI server would: `max_tokens` (or
`max_completion_tokens`) cuts the answer with finish_reason "length", and `stop` cuts it at the
first stop string with finish_reason "stop" and, as vLLM reports it, `"stop_reason": "<string>"`.

`POST /v1/completions` answers the legacy text API (`text_completion`, JSON and stream, a
prompt string or list, `n`, `echo`, `max_tokens`, `stop`, usage) with the same knobs; `POST
/tokenize` counts like vLLM (`{model, messages}` -> `count`) or llama.cpp (`{content}` ->
`tokens`): one token per whitespace-separated word.

`GET /_stats` counts streams `started`, `completed` and `cancelled` by the peer (a huge answer
the peer stopped reading counts as cancelled), and `stream_bytes`: the token and huge bytes written. `GET /_requests` returns every chat request body received (newest last); `DELETE /_requests`
clears them. `/v1/models` lists `--models`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiohttp import web

_STATE: dict[str, Any] = {"control": {}, "requests": [], "models": ["fake-model"], "cancelled": 0, "completed": 0,
                          "started": 0, "stream_bytes": 0}
_MIB = 1 << 20


def _knobs(body: dict[str, Any]) -> dict[str, Any]:
    knobs = dict(_STATE["defaults"])
    knobs.update(_STATE["control"])
    knobs.update(body.get("fake") or {})
    messages = body.get("messages") or [{}]
    if knobs.get("after_tool") and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
        knobs.update(knobs["after_tool"])
    return knobs


def _content(knobs: dict[str, Any], body: dict[str, Any] | None = None) -> list[str]:
    if knobs.get("echo_context") and body is not None:
        system = [m.get("content") for m in body.get("messages") or [] if m.get("role") == "system"]
        knobs = {**knobs, "reply": " ".join(c for c in system if isinstance(c, str)) or "no context"}
    if knobs.get("reply") is not None:
        words = str(knobs["reply"]).split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]
    return [f"tok{i}" if i == 0 else f" tok{i}" for i in range(int(knobs["tokens"]))]


def _limit(body: dict[str, Any], pieces: list[str]) -> tuple[list[str], str, str | None]:
    """The pieces cut by the request's `stop` and `max_tokens`; the finish reason; the stop hit."""
    stops = body.get("stop") or []
    stops = [stops] if isinstance(stops, str) else stops
    text = "".join(pieces)
    hits = [(text.find(s), s) for s in stops if s and s in text]
    finish, matched = "stop", None
    if hits:
        at, matched = min(hits)
        kept: list[str] = []
        size = 0
        for piece in pieces:
            if size + len(piece) >= at:
                if at > size:
                    kept.append(piece[:at - size])
                break
            kept.append(piece)
            size += len(piece)
        pieces = kept
    cap = body.get("max_tokens") or body.get("max_completion_tokens")
    if cap and len(pieces) > int(cap):
        pieces, finish, matched = pieces[:int(cap)], "length", None
    return pieces, finish, matched


def _calls(knobs: dict[str, Any]) -> list[dict[str, Any]]:
    tool = knobs.get("tool_call")
    return [] if not tool else [tool] if isinstance(tool, dict) else list(tool)


def _usage(body: dict[str, Any], completion: int) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _error(status: int, knobs: dict[str, Any] | None = None) -> web.Response:
    knobs = knobs or {}
    kind = "invalid_request_error" if status < 500 else "server_error"
    message = knobs.get("message") or f"fake upstream error {status}"
    payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    headers = {"Retry-After": str(knobs["retry_after"])} if knobs.get("retry_after") else None
    return web.json_response(payload, status=status, headers=headers)


async def _take(request: web.Request) -> tuple[dict[str, Any], dict[str, Any]] | web.Response:
    """A request's body, recorded, and the knobs for it; or the error answer the knobs (or a
    malformed body) call for."""
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return _error(400)
    _STATE["requests"].append(body)
    knobs = _knobs(body)
    if knobs.get("status"):
        return _error(int(knobs["status"]), knobs)
    return body, knobs


async def chat(request: web.Request) -> web.StreamResponse:
    taken = await _take(request)
    if isinstance(taken, web.Response):
        return taken
    body, knobs = taken
    model = body.get("model", "fake-model")
    created = int(time.time())
    pieces, finish, matched = _limit(body, _local_habits(knobs, _content(knobs, body)))
    verdict = _guard_verdict(knobs, " ".join(str(m.get("content", "")) for m in body.get("messages") or []))
    if verdict is not None:
        pieces, finish, matched = [verdict], "stop", None
    tools = _calls(knobs)
    if tools:
        finish, matched = "tool_calls", None
    delay = float(knobs.get("delay_ms", 0)) / 1000.0
    if knobs.get("huge_bytes") and not body.get("stream"):
        return await _huge_json(request, model, created, int(knobs["huge_bytes"]), bool(knobs.get("huge_declared")))
    if not body.get("stream"):
        if delay:
            await asyncio.sleep(delay)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces)}
        if tools:
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{i}", "type": "function",
                 "function": {"name": tool["name"], "arguments": tool.get("arguments", "{}")}}
                for i, tool in enumerate(tools)]}
        if knobs.get("reasoning"):
            message["reasoning_content"] = str(knobs["reasoning"])
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        if matched is not None:
            choice["stop_reason"] = matched
        return web.json_response({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": created, "model": model,
            "choices": [choice], "usage": _usage(body, len(pieces)),
        })
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    _STATE["started"] += 1
    pad = "x" * int(knobs.get("pad_bytes") or 0)

    def event(delta: dict[str, Any], finish: str | None = None, usage: Any = None, stop: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if stop is not None:
            chunk["choices"][0]["stop_reason"] = stop
        if usage is not None:
            chunk["usage"] = usage
            chunk["choices"] = []
        if pad:
            chunk["fake_pad"] = pad
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    try:
        await resp.write(event({"role": "assistant", "content": ""}))
        for i, word in enumerate(str(knobs.get("reasoning") or "").split(" ") if knobs.get("reasoning") else ()):
            await resp.write(event({"reasoning_content": word if i == 0 else " " + word}))
        if knobs.get("huge_bytes"):
            head = b'data: {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "'
            await _write_huge(resp, head, int(knobs["huge_bytes"]), b'"}, "finish_reason": null}]}\n\n')
        cut = knobs.get("disconnect_after")
        for i, piece in enumerate(pieces):
            if cut is not None and i >= int(cut):
                assert request.transport is not None
                request.transport.close()
                return resp
            if delay:
                await asyncio.sleep(delay)
            data = event({"content": piece})
            _STATE["stream_bytes"] += len(data)
            await resp.write(data)
            if i == 0:
                for raw in knobs.get("inject") or ():
                    await resp.write(b"data: " + str(raw).encode("utf-8", "surrogateescape") + b"\n\n")
    except (ConnectionError, asyncio.CancelledError):  # a reset, or aiohttp's "Connection lost" in a drain
        _STATE["cancelled"] += 1  # the gateway dropped the stream: the client went away
        raise
    for i, tool in enumerate(tools):
        arguments = str(tool.get("arguments", "{}"))
        n = max(int(knobs.get("fragments") or 1), 1)
        size = -(-len(arguments) // n) or 1
        parts = [arguments[k:k + size] for k in range(0, len(arguments), size)] or [""]
        await resp.write(event({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                               "function": {"name": tool["name"], "arguments": parts[0]}}]}))
        for part in parts[1:]:
            await resp.write(event({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
    await resp.write(event({}, finish, stop=matched))
    if (body.get("stream_options") or {}).get("include_usage"):
        await resp.write(event({}, usage=_usage(body, len(pieces))))
    await resp.write(b"data: [DONE]\n\n")
    _STATE["completed"] += 1
    return resp


def _text_call(call: dict[str, Any]) -> str:
    fmt, name, args = call.get("format", "hermes"), call["name"], call.get("arguments", {})
    if fmt == "hermes":
        return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"
    if fmt == "mistral":
        return "[TOOL_CALLS] " + json.dumps([{"name": name, "arguments": args}])
    if fmt == "mistral_args":
        return f"[TOOL_CALLS]{name}[ARGS]" + json.dumps(args)
    if fmt == "llama3":
        return "<|python_tag|>" + json.dumps({"name": name, "parameters": args})
    return json.dumps({"name": name, "arguments": args})


def _local_habits(knobs: dict[str, Any], pieces: list[str]) -> list[str]:
    """The answer's pieces as a model without server-side parsers writes them."""
    if knobs.get("replies"):
        replies = list(knobs["replies"])
        seen = _STATE.get("replies_seen", 0)
        _STATE["replies_seen"] = seen + 1
        pieces = [str(replies[min(seen, len(replies) - 1)])]
    calls = knobs.get("text_tool_call")
    if not (knobs.get("think") is not None or calls or knobs.get("chunk_chars") or knobs.get("replies")):
        return pieces
    text = "".join(pieces) if knobs.get("reply") is not None or knobs.get("replies") or not calls else ""
    for call in [calls] if isinstance(calls, dict) else calls or []:
        text += ("\n" if text else "") + _text_call(call)
    if knobs.get("think") is not None:
        text = f"<think>{knobs['think']}</think>\n\n" + text
    size = int(knobs.get("chunk_chars") or 0)
    if not size:
        return [text] if knobs.get("replies") else [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]
    return [text[k:k + size] for k in range(0, len(text), size)]


async def _write_huge(resp: web.StreamResponse, head: bytes, size: int, tail: bytes) -> None:
    """`head`, then "x" up to `size` bytes in all, then `tail`: 1 MiB per write."""
    await resp.write(head)
    left = max(size - len(head) - len(tail), 0)
    piece = b"x" * _MIB
    while left > 0:
        part = piece if left >= _MIB else piece[:left]
        _STATE["stream_bytes"] += len(part)
        await resp.write(part)
        left -= len(part)
    await resp.write(tail)


async def _huge_json(request: web.Request, model: str, created: int, size: int, declared: bool) -> web.StreamResponse:
    head = json.dumps({"id": "chatcmpl-fake", "object": "chat.completion", "created": created, "model": model})
    head_bytes = head[:-1].encode() + b', "choices": [{"index": 0, "message": {"role": "assistant", "content": "'
    tail = b'"}, "finish_reason": "stop"}]}'
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    if declared:
        resp.content_length = max(size, len(head_bytes) + len(tail))
    await resp.prepare(request)
    try:
        await _write_huge(resp, head_bytes, size, tail)
        await resp.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        _STATE["cancelled"] += 1  # the gateway stopped reading and closed the connection
        raise
    _STATE["completed"] += 1
    return resp


def _guard_verdict(knobs: dict[str, Any], prompt: str) -> str | None:
    """A guard model's answer when `prompt` is a guard prompt, else None."""
    llama_guard = "<BEGIN UNSAFE CONTENT CATEGORIES>" in prompt
    if not llama_guard and "Human Question:" not in prompt:
        return None
    when = knobs.get("guard_when")
    verdict = str(knobs.get("guard") or "safe") if not when or str(when) in prompt else "safe"
    if llama_guard:
        return verdict
    return "Yes" if verdict.startswith("unsafe") else "No"


def _text_prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [" ".join(f"t{t}" for t in prompt)]
    return [p if isinstance(p, str) else " ".join(f"t{t}" for t in p) for p in prompt or [""]]


async def completions(request: web.Request) -> web.StreamResponse:
    """The legacy text API: one choice per prompt and `n`, index `prompt * n + i`."""
    taken = await _take(request)
    if isinstance(taken, web.Response):
        return taken
    body, knobs = taken
    model, created, n = body.get("model", "fake-model"), int(time.time()), int(body.get("n") or 1)
    answers: list[tuple[list[str], str]] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for prompt in _text_prompts(body.get("prompt")):
        verdict = _guard_verdict(knobs, prompt)
        pieces, finish, _ = ([verdict], "stop", None) if verdict is not None else _limit(body, _content(knobs))
        if body.get("echo"):
            pieces = [prompt, *pieces]
        answers += [(pieces, finish)] * n
        usage["prompt_tokens"] += len(prompt.split())
        usage["completion_tokens"] += len(pieces) * n
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    head = {"id": "cmpl-fake", "object": "text_completion", "created": created, "model": model}
    if not body.get("stream"):
        return web.json_response({**head, "choices": [
            {"text": "".join(p), "index": i, "logprobs": None, "finish_reason": f}
            for i, (p, f) in enumerate(answers)], "usage": usage})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    delay = float(knobs.get("delay_ms", 0)) / 1000.0

    async def send(chunk: dict[str, Any]) -> None:
        await resp.write(b"data: " + json.dumps({**head, **chunk}).encode() + b"\n\n")

    for i, (pieces, finish) in enumerate(answers):
        for piece in pieces:
            if delay:
                await asyncio.sleep(delay)
            await send({"choices": [{"text": piece, "index": i, "logprobs": None, "finish_reason": None}]})
        await send({"choices": [{"text": "", "index": i, "logprobs": None, "finish_reason": finish}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        await send({"choices": [], "usage": usage})
    await resp.write(b"data: [DONE]\n\n")
    return resp


async def tokenize(request: web.Request) -> web.Response:
    body = await request.json()
    if "messages" in body:  # vLLM
        count = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        return web.json_response({"count": count, "max_model_len": 32768, "tokens": list(range(count))})
    return web.json_response({"tokens": list(range(len(str(body.get("content", "")).split())))})


async def models(_: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [
        {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in _STATE["models"]]})


async def control(request: web.Request) -> web.Response:
    _STATE["control"] = await request.json()
    _STATE["replies_seen"] = 0
    return web.json_response(_STATE["control"])


async def stats(_: web.Request) -> web.Response:
    return web.json_response({k: _STATE[k] for k in ("started", "completed", "cancelled", "stream_bytes")})


async def requests_seen(request: web.Request) -> web.Response:
    if request.method == "DELETE":
        _STATE["requests"].clear()
        _STATE["cancelled"] = _STATE["completed"] = _STATE["started"] = _STATE["stream_bytes"] = 0
    return web.json_response(_STATE["requests"])


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", chat)
        app.router.add_get(f"{prefix}/models", models)
        app.router.add_post(f"{prefix}/completions", completions)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/_control", control)
    app.router.add_route("*", "/_requests", requests_seen)
    app.router.add_get("/_stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--models", default="fake-model")
    args = parser.parse_args()
    _STATE["defaults"] = {"tokens": args.tokens, "delay_ms": args.delay_ms}
    _STATE["models"] = [m for m in args.models.split(",") if m]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
