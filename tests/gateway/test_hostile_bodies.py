"""Chat bodies that used to crash a request (issue 13) get a 400 in each dialect's own error
shape, over HTTP: wrong JSON types where the gateway hashes them, nesting past what can be
written upstream again."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import FakeLLM, Gateway

USER = {"role": "user", "content": "hi"}
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "coder", "messages": [USER]},
    "/v1/messages": {"model": "coder", "max_tokens": 16, "messages": [USER]},
    "/api/chat": {"model": "coder", "messages": [USER], "stream": False},
    "/api/generate": {"model": "coder", "prompt": "hi", "stream": False},
}


def refused(resp: httpx.Response) -> str:
    """The refusal's message, after checking it is a 400 in the path's dialect."""
    assert resp.status_code == 400, resp.text
    body = resp.json()
    path = resp.request.url.path
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        return str(body["error"]["message"])
    if path.startswith("/api/"):
        assert isinstance(body["error"], str)
        return str(body["error"])
    assert body["error"]["type"] == "invalid_request_error"
    return str(body["error"]["message"])


# Where a deep value travels upstream in each dialect (`@` stands for it).
DEEP_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {**BODIES["/v1/chat/completions"], "future_field": "@"},
    "/v1/messages": {**BODIES["/v1/messages"], "tools": [{"name": "f", "input_schema": {"type": "object", "x": "@"}}]},
    "/api/chat": {**BODIES["/api/chat"], "format": {"type": "object", "x": "@"}},
    "/api/generate": {**BODIES["/api/generate"], "format": {"type": "object", "x": "@"}},
}


@pytest.mark.parametrize("levels", [256, 1000])
@pytest.mark.parametrize("path", list(BODIES))
def test_a_valid_body_nested_256_to_1024_deep_is_a_400_not_a_502(gateway: Gateway, llm: FakeLLM, path: str,
                                                                  levels: int) -> None:
    content = json.dumps(DEEP_BODIES[path]).replace('"@"', "[" * levels + "]" * levels)
    resp = httpx.post(gateway.url + path, content=content, headers={"content-type": "application/json"}, timeout=30)
    assert "nested more than" in refused(resp)
    assert llm.requests() == []  # refused before anything went upstream


@pytest.mark.parametrize("role", [["user"], {"role": "user"}])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_a_role_that_is_not_a_string_is_a_400_not_a_500(gateway: Gateway, path: str, role: Any) -> None:
    resp = httpx.post(gateway.url + path, json={**BODIES[path], "messages": [{"role": role, "content": "hi"}]},
                      timeout=30)
    assert "role" in refused(resp)


def test_valid_bodies_still_answer(gateway: Gateway, llm: FakeLLM) -> None:
    for path, body in BODIES.items():
        resp = httpx.post(gateway.url + path, json={**body, "future_field": {"kept": [1, 2]}}, timeout=30)
        assert resp.status_code == 200, (path, resp.text)
    assert all(sent.get("future_field") == {"kept": [1, 2]} for sent in llm.requests()[:1])  # passed through


@pytest.mark.parametrize("value", ["²".encode("latin-1"), b"0", b"101", b"ten", b"-1"])
def test_an_odd_rag_top_k_header_is_a_400(gateway: Gateway, value: bytes) -> None:
    resp = httpx.post(f"{gateway.base_url}/chat/completions", timeout=10, headers={b"x-rag-top-k": value},
                      json={"model": "coder", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "x-rag-top-k"
