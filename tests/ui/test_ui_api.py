"""What the web UI stands on, over HTTP: its files (open, strict CSP, gzip, ETag), the key
rule (the shell loads, no data without a key), the passages event of a RAG stream, the
prompt a chat was written with, the workspaces list and the Activity endpoint."""

from __future__ import annotations

import dataclasses
import gzip
import json
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import psycopg
import pytest

from appliance.domain.errors import DependencyUnavailable
from appliance.domain.events import chat_events, retrieval_events
from appliance.domain.records import ChatOutcome, RetrievalOutcome, RetrievedChunk, Usage
from appliance.embedded.ports import free_port
from appliance.events.activity import PgActivityLog
from appliance.events.rows import rows_for
from tests.conftest import FakeLLM, Gateway
from tests.ui.conftest import AUTH
from tests.ui.test_browser import put_docs


def get(url: str, headers: dict[str, str] | None = None, body: Any = None,
        method: str | None = None) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if data else {}), **AUTH, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def test_the_shell_is_served_from_the_package_with_a_strict_policy(ui_gateway: Gateway) -> None:
    status, headers, body = get(f"{ui_gateway.url}/ui/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b'src="/ui/app.js"' in body
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    status, headers, zipped = get(f"{ui_gateway.url}/ui/app.js", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["content-encoding"] == "gzip" and headers["content-type"].startswith("text/javascript")
    assert b"x-appliance-passages" in gzip.decompress(zipped)
    assert get(f"{ui_gateway.url}/ui/app.js", {"If-None-Match": headers["etag"]})[0] == 304
    status, _, body = get(f"{ui_gateway.url}/ui/../appliance.py")
    assert status == 404
    status, _, body = get(f"{ui_gateway.url}/ui/nothing.js")
    assert status == 404 and json.loads(body)["error"]["message"] == "No file 'nothing.js' in the UI"


def test_with_keys_the_shell_loads_but_no_data_without_the_key(ui_gateway: Gateway) -> None:
    for path in ("/ui", "/ui/", "/ui/app.js", "/ui/md.js", "/ui/app.css"):
        assert get(ui_gateway.url + path, {"Authorization": ""})[0] == 200, path
    for path in ("/v1/models", "/v1/knowledge", "/ui/api/activity", "/ui/api/activity/x", "/ui/api"):
        assert get(ui_gateway.url + path, {"Authorization": ""})[0] == 401, path


async def test_activity_says_so_when_postgresql_is_down() -> None:
    log = PgActivityLog(f"postgresql://127.0.0.1:{free_port()}/none", connect_timeout_s=1)
    try:
        with pytest.raises(DependencyUnavailable, match="PostgreSQL is unavailable"):
            await log.recent(5)
    finally:
        await log.close()


def sse_events(raw: bytes) -> list[tuple[str, str]]:
    out = []
    for block in raw.decode().split("\n\n"):
        lines = block.splitlines()
        event = next((line[7:] for line in lines if line.startswith("event: ")), "message")
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        if data:
            out.append((event, data))
    return out


def test_a_rag_stream_carries_its_passages_when_asked_and_names_its_prompt(ui_gateway: Gateway, llm: FakeLLM) -> None:
    put_docs(ui_gateway, "ui-api")
    chat = {"model": "coder", "stream": True, "messages": [{"role": "user", "content": "Where are the winter tyres?"}]}
    url = f"{ui_gateway.base_url}/chat/completions"
    status, headers, raw = get(url, {"x-workspace": "ui-api", "x-appliance-passages": "true"}, chat)
    assert status == 200 and headers["x-appliance-prompt"] == "rag-answer@1"
    events = sse_events(raw)
    assert events[0][0] == "appliance.passages" and events[-1] == ("message", "[DONE]")
    lead = json.loads(events[0][1])
    assert lead["prompt"] == {"name": "rag-answer", "version": 1}
    first = lead["passages"][0]
    assert first["number"] == 1 and first["document_id"] == "car.md" and "Birch Lane" in first["content"]
    assert set(first["scores"]) >= {"dense", "text", "rrf"}
    assert all(e == "message" for e, _ in sse_events(get(url, {"x-workspace": "ui-api"}, chat)[2]))  # not asked
    status, _, body = get(url, {"x-workspace": "ui-api"}, {**chat, "stream": False})
    assert json.loads(body)["appliance"]["passages"][0]["document_id"] == "car.md"


def test_a_workspace_can_ask_for_another_prompt_version_and_an_unknown_one_is_refused(ui_gateway: Gateway,
                                                                                       llm: FakeLLM) -> None:
    chat = {"model": "coder", "messages": [{"role": "user", "content": "tyres?"}]}
    url = f"{ui_gateway.base_url}/chat/completions"
    status, headers, _ = get(url, {"x-workspace": "ui-api", "x-prompt-version": "rag-answer@1"}, chat)
    assert status == 200 and headers["x-appliance-prompt"] == "rag-answer@1"
    status, _, body = get(url, {"x-workspace": "ui-api", "x-prompt-version": "7"}, chat)
    error = json.loads(body)["error"]
    assert status == 400 and error["param"] == "x-prompt-version" and "rag-answer@7" in error["message"]
    assert get(f"{ui_gateway.base_url}/models")[0] == 200  # still serving


def test_workspaces_are_listed_with_their_counts(ui_gateway: Gateway) -> None:
    put_docs(ui_gateway, "ui-list")
    status, _, body = get(f"{ui_gateway.base_url}/knowledge")
    listed = {w["workspace"]: w for w in json.loads(body)["data"]}
    assert status == 200 and listed["ui-list"]["documents"] == 6 and listed["ui-list"]["chunks"] >= 6


def persist(url: str, *events: Any) -> None:
    """What `appliance persist` writes for these events (the same row mapping)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for event in (e for e in events if e.subject.startswith("pipeline.")):
            for table, row in rows_for(event.subject, orjson.dumps(event.payload)):
                conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})"
                             " ON CONFLICT DO NOTHING", tuple(row.values()))


def test_activity_lists_recent_chats_and_opens_one_with_its_sources(ui_gateway: Gateway, migrated_pg: str) -> None:
    put_docs(ui_gateway, "ui-activity")
    now = time.time()
    chat = ChatOutcome(
        correlation_id=f"ui-act-{now}", model="coder", upstream_model="fake-model", backend="local-vllm", route="rag",
        streaming=True, messages=[{"role": "system", "content": "[1] (router.md) ..."},
                                  {"role": "user", "content": "What is the guest wifi called?"}],
        response_text="It is OAKWIFI [1].", finish_reason="stop", usage=Usage(40, 6), latency_ms=812.5,
        ttft_ms=95.25, cost_usd=0.000052, workspace="ui-activity", sources=("router.md",), started_at=now,
        prompt={"name": "rag-answer", "version": 1})
    retrieval = RetrievalOutcome(chat.correlation_id, "ui-activity", "guest wifi", "hybrid", True,
                                 (RetrievedChunk("router.md", 0, 0.91), RetrievedChunk("gone.md", 3, 0.2)),
                                 12.0, 300, now)
    persist(migrated_pg, *chat_events(dataclasses.asdict(chat)), *retrieval_events(dataclasses.asdict(retrieval)))
    status, _, body = get(f"{ui_gateway.url}/ui/api/activity?limit=5")
    assert status == 200
    row = json.loads(body)["data"][0]
    assert {k: row[k] for k in ("model", "backend", "route", "prompt_tokens", "completion_tokens", "latency_ms",
                                "ttft_ms", "cost_usd", "prompt_name", "prompt_version", "question")} == {
        "model": "coder", "backend": "local-vllm", "route": "rag", "prompt_tokens": 40, "completion_tokens": 6,
        "latency_ms": 812.5, "ttft_ms": 95.25, "cost_usd": 0.000052, "prompt_name": "rag-answer",
        "prompt_version": 1, "question": "What is the guest wifi called?"}
    status, _, body = get(f"{ui_gateway.url}/ui/api/activity/{row['event_id']}")
    detail = json.loads(body)
    assert status == 200 and detail["response"] == "It is OAKWIFI [1]." and detail["prompt"].startswith("What is")
    assert [(s["document_id"], s["chunk_index"]) for s in detail["sources"]] == [("router.md", 0), ("gone.md", 3)]
    assert "OAKWIFI" in detail["sources"][0]["content"] and detail["sources"][1]["content"] is None
    assert get(f"{ui_gateway.url}/ui/api/activity/nope")[0] == 404
