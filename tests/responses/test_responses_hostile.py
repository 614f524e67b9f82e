"""No body, id or query makes `/v1/responses` answer 5xx: every node of one rich valid body in
turn replaced by each hostile value of the fuzz suite (or removed), against the gateway that
stores responses in PostgreSQL (so NUL and the like also reach the store), then hostile ids and
paging values. Refusals are OpenAI error bodies; the gateway logs no error."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import httpx

from tests.conftest import FakeLLM, Gateway
from tests.fuzz import strategies as s

SCHEMA: Any = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
BODY: Any = {
    "model": "coder", "store": True, "instructions": "be brief", "temperature": 0.5, "top_p": 0.9,
    "max_output_tokens": 20, "metadata": {"k": "v"}, "parallel_tool_calls": True, "tool_choice": "auto",
    "reasoning": {"effort": "low"}, "text": {"format": {"type": "json_schema", "name": "w", "schema": SCHEMA}},
    "tools": [{"type": "function", "name": "weather", "parameters": SCHEMA},
              {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "f"}]}, {"type": "web_search"}],
    "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                           {"type": "input_image", "image_url": f"data:image/png;base64,{s.PNG}"}]},
              {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
              {"type": "function_call_output", "call_id": "c1", "output": "sunny"}],
}


def answered(resp: httpx.Response) -> str | None:
    """Why the answer is wrong, or None: below 500, and a refusal in OpenAI's error shape."""
    if resp.status_code >= 500:
        return f"{resp.status_code}: {resp.text[:200]}"
    if resp.status_code >= 400 and set(resp.json().get("error") or {}) != {"message", "type", "param", "code"}:
        return f"not an OpenAI error body: {resp.text[:200]}"
    return None


def errors_logged(gateway: Gateway, start: int) -> list[str]:
    with gateway.log.open("rb") as log:
        log.seek(start)
        lines = [json.loads(line) for line in log.read().split(b"\n") if line.strip()]
    return [str(line)[:300] for line in lines if line.get("level") in ("error", "critical")]


def test_every_node_with_every_wrong_value_and_hostile_ids(stored_gateway: Gateway, llm: FakeLLM) -> None:
    start = stored_gateway.log.stat().st_size
    failures: list[str] = []
    with httpx.Client(base_url=stored_gateway.url, timeout=30) as http:
        def post(body: Any) -> httpx.Response:
            return http.post("/v1/responses", content=s.encode(body), headers={"content-type": "application/json"})

        created = post(BODY)
        assert created.status_code == 200, created.text
        stored_id = created.json()["id"]
        for where in s.paths(BODY):
            for value in (*s.HOSTILE, s.GONE):
                if problem := answered(post(s.mutate(BODY, where, value))):
                    failures.append(f"{'.'.join(map(str, where))} = {'(removed)' if value is s.GONE else repr(value)}: "
                                    f"{problem}")
        for rid in (stored_id, "resp_x", "", "\x00", "x" * 5000, "\u2028", "../x"):
            quoted = urllib.parse.quote(rid, safe="")
            for value in s.QUERY_VALUES:
                for params in ({"limit": value}, {"order": value}, {"after": value}):
                    if problem := answered(http.get(f"/v1/responses/{quoted}/input_items", params=params)):
                        failures.append(f"input_items {rid[:20]!r} {params}: {problem}")
            for method in ("GET", "DELETE"):
                if problem := answered(http.request(method, f"/v1/responses/{quoted}")):
                    failures.append(f"{method} {rid[:20]!r}: {problem}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])
    assert not errors_logged(stored_gateway, start)
