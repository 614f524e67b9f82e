"""The fault matrix for misbehaving upstreams: every fault, in every dialect, streamed or
not, answers with the right status and that dialect's error shape (or, once the head has
gone out, its error frame), and the gateway keeps serving. docs/faults.md has the table."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway

DIALECTS = {
    "openai": ("/v1/chat/completions", {"model": "coder", "messages": [{"role": "user", "content": "hi"}]}),
    "anthropic": ("/v1/messages", {"model": "coder", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
    "ollama": ("/api/chat", {"model": "coder", "messages": [{"role": "user", "content": "hi"}]}),
}
# fault -> (what the fake LLM does, the status without streaming, and for a stream whose head
# went out first: the terminal error frame's words, or None when the answer ends whole)
FAULTS: dict[str, tuple[dict[str, Any], int, str | bool | None]] = {
    "refuses": ({}, 502, False),                                  # a dead backend (its port closed)
    "hangs": ({"delay_ms": 3000}, 504, "did not answer in time"),  # past the backend's timeout_s = 1
    "429": ({"status": 429, "retry_after": "1"}, 429, False),
    "5xx": ({"status": 503}, 502, False),
    "garbage events": ({"inject": ["{not json", "[1,2]", '{"choices": 7}']}, 200, None),
    "mid-stream close": ({"disconnect_after": 2}, 200, "backend local-vllm"),  # "ended the stream early"
                                                                            # or "unreachable" (a cut chunk)
}


@pytest.fixture(scope="module")
def gw(fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    dead = procs.free_port()
    extra = f"""
[[backends]]
name = "refusing"
kind = "vllm"
base_url = "http://127.0.0.1:{dead}/v1"
discover = false
[[models]]
id = "refuser"
backend = "refusing"
[[backends]]
name = "hanging"
kind = "vllm"
base_url = "http://127.0.0.1:{fake_llm.port}/v1"
timeout_s = 1
discover = false
[[models]]
id = "hanger"
backend = "hanging"
upstream_id = "fake-model"
[[backends]]
name = "throttling"
kind = "vllm"
base_url = "http://127.0.0.1:{fake_llm.port}/v1"
discover = false
[[models]]
id = "throttler"
backend = "throttling"
upstream_id = "fake-model"
"""
    g = start_gateway(tmp_path_factory.mktemp("matrix"), catalog_for(fake_llm.port, extra=extra),
                      APPLIANCE_ROUTING__BREAKER_FAILURES="1000")  # every case reaches its backend
    try:
        yield g
    finally:
        procs.stop(g.proc)


def call(gw: Gateway, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=15)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def error_shape(dialect: str, raw: bytes) -> str:
    """The error's message, asserting the dialect's shape."""
    body = json.loads(raw)
    if dialect == "openai":
        assert set(body["error"]) == {"message", "type", "param", "code"}
        return str(body["error"]["message"])
    if dialect == "anthropic":
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
        return str(body["error"]["message"])
    assert set(body) == {"error"} and isinstance(body["error"], str)
    return body["error"]


def last_frame_error(dialect: str, raw: bytes) -> str | None:
    """The stream's terminal error frame, in the dialect's shape; None when it ended well."""
    text = raw.decode()
    if dialect == "ollama":
        last = json.loads(text.strip().splitlines()[-1])
        return last.get("error")
    frames = [f for f in text.split("\n\n") if f.strip()]
    last_frame = frames[-1]
    if dialect == "anthropic":
        if not last_frame.startswith("event: error"):
            assert last_frame.startswith("event: message_stop")
            return None
        return error_shape("anthropic", last_frame.split("data: ", 1)[1].encode())
    if last_frame == "data: [DONE]":
        return None
    return error_shape("openai", last_frame.removeprefix("data: ").encode())


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault(gw: Gateway, llm: FakeLLM, fault: str, dialect: str, stream: bool) -> None:
    knobs, status, frame = FAULTS[fault]
    path, body = DIALECTS[dialect]
    # A 429's Retry-After holds its backend back for that long: the case gets a backend of its own.
    model = {"refuses": "refuser", "hangs": "hanger", "429": "throttler"}.get(fault, "coder")
    body = {**body, "model": model, "stream": stream}
    llm.control(**knobs)  # the Anthropic and Ollama dialects drop unknown fields, so no per-request knobs
    try:
        got, headers, raw = call(gw, path, body)
    finally:
        llm.control()
    if stream and frame is not False:  # the head went out before the fault
        assert got == 200
        error = last_frame_error(dialect, raw)
        assert error is None if frame is None else (error is not None and str(frame) in error), raw[-300:]
    elif status == 200:
        assert got == 200              # unreadable events skipped; a non-streamed answer is whole before a cut
    else:
        assert got == status, raw[:300]
        assert error_shape(dialect, raw)
        if fault == "429":
            assert headers.get("retry-after") == "1"
            time.sleep(1.1)  # the backend asked for a second's rest; the next case starts after it
    ok, _, _ = call(gw, *DIALECTS[dialect])  # and the gateway keeps serving
    assert ok == 200
