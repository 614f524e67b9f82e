"""Keys in PostgreSQL against real gateways: the CLI, auth on every endpoint, allowlists (and
the model listings the official clients read, filtered by them), rpm/tpm/budgets with their
headers, limits shared by workers and replicas, revocation, audit."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import psycopg
import pytest

from appliance.cli import main as cli_main
from tests import procs
from tests.access.conftest import CHAT, FAST_SYNC, Keys, auth, new_key, ready, unique, wait_status
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway

ROUTES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/v1/chat/completions", CHAT, "openai"),
    ("POST", "/v1/completions", {"model": "fake-model", "prompt": "hi"}, "openai"),
    ("POST", "/v1/embeddings", {"input": "hi"}, "openai"),
    ("POST", "/v1/moderations", {"input": "hi"}, "openai"),
    ("POST", "/v1/responses", {"model": "fake-model", "input": "hi"}, "openai"),
    ("GET", "/v1/models", None, "openai"),
    ("POST", "/v1/rerank", {"query": "q", "documents": ["d"]}, "openai"),
    ("POST", "/v1/knowledge/ws/search", {"query": "q"}, "openai"),
    ("GET", "/v1/knowledge/ws/documents", None, "openai"),
    ("POST", "/v1/messages", {"model": "fake-model", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
     "anthropic"),
    ("POST", "/api/chat", CHAT, "ollama"),
    ("POST", "/api/generate", {"model": "fake-model", "prompt": "hi"}, "ollama"),
    ("POST", "/api/embed", {"model": "m", "input": "hi"}, "ollama"),
    ("GET", "/api/tags", None, "ollama"),
    ("GET", "/admin/keys", None, "openai"),
    ("GET", "/admin/usage", None, "openai"),
]


def call(gw: Gateway, method: str, path: str, body: Any = None, secret: str | None = None) -> httpx.Response:
    return httpx.request(method, gw.url + path, json=body, headers=auth(secret) if secret else {}, timeout=10)


def error_type(dialect: str, body: Any) -> str:
    if dialect == "anthropic":
        assert body["type"] == "error"
        return str(body["error"]["type"])
    if dialect == "ollama":
        return str(body["error"])
    return str(body["error"]["type"])


def test_cli_create_list_rotate_revoke(gw: Gateway, keys: Keys) -> None:
    out = keys("create", name := unique("cli"), "--models", "qwen3-*", "--rpm", "60", "--expires", "2099-01-01")
    secret = out[-1]
    assert secret.startswith("appl-") and len(secret) > 40
    listing = "\n".join(keys("list"))
    assert name in listing and "qwen3-*" in listing and secret not in listing and secret[:9] in listing
    wait_status(gw, secret, 200)
    rotated = keys("rotate", name)[-1]
    assert rotated != secret and rotated.startswith("appl-")
    wait_status(gw, secret, 401)
    wait_status(gw, rotated, 200)
    keys("revoke", name)
    assert "revoked" in "\n".join(keys("list"))
    wait_status(gw, rotated, 401)
    keys("revoke", name, code=1)  # not active any more


@pytest.mark.parametrize(("method", "path", "body", "dialect"), ROUTES, ids=[r[1] for r in ROUTES])
def test_every_endpoint_needs_a_key(gw: Gateway, keys: Keys, method: str, path: str, body: Any,
                                    dialect: str) -> None:
    if not any(line.strip() for line in keys("list")[1:]):  # run alone: the store needs a key first
        ready(gw, new_key(keys, "exists")[1])
    for secret in (None, "appl-not-a-key-at-all-0000000000"):
        resp = call(gw, method, path, body, secret)
        assert resp.status_code == 401, (path, resp.text)
        kind = error_type(dialect, resp.json())
        assert kind == "authentication_error" or (dialect == "ollama" and "API key" in kind)


def test_models_and_workspaces_outside_the_allowlist(gw: Gateway, keys: Keys) -> None:
    _, secret = new_key(keys, "allow", "--models", "qwen3-*", "--workspaces", "team")
    _, anyone = new_key(keys, "any")
    ready(gw, secret)
    assert call(gw, "POST", "/v1/chat/completions", {**CHAT, "model": "qwen3-8b"}, secret).status_code == 200
    refused = call(gw, "POST", "/v1/chat/completions", CHAT, secret)
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    anthropic = call(gw, "POST", "/v1/messages", {"model": "fake-model", "max_tokens": 8,
                                                   "messages": [{"role": "user", "content": "hi"}]}, secret)
    assert anthropic.status_code == 403 and anthropic.json()["error"]["type"] == "permission_error"
    assert call(gw, "POST", "/api/chat", CHAT, secret).status_code == 403
    assert call(gw, "POST", "/v1/knowledge/other/search", {"query": "q"}, secret).status_code == 403
    # The listings show the key only what it may call; a lookup of another model is a 404.
    client = openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["qwen3-8b"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("fake-model")
    local = ollama.Client(host=gw.url, headers=auth(secret))
    assert [m.model for m in local.list().models] == ["qwen3-8b"]
    with pytest.raises(ollama.ResponseError) as hidden:
        local.show("fake-model")
    assert hidden.value.status_code == 404 and local.show("qwen3-8b").capabilities
    assert {"coder", "fake-model", "qwen3-8b"} <= {m.id for m in openai.OpenAI(
        base_url=gw.base_url, api_key=anyone, max_retries=0).models.list().data}
    assert call(gw, "GET", "/admin/keys", None, secret).status_code == 403   # not an admin key
    denied = [ln for ln in gw.log_lines() if ln.get("audit") == "denied" and ln.get("status") == 403]
    assert denied and all(ln["key"].startswith("allow-") for ln in denied)
    assert secret not in gw.log.read_text()


def test_rpm_429_with_openai_headers(gw_b: Gateway, keys: Keys) -> None:
    gw = gw_b  # one worker: every request sees the last one's count at once (across workers: below)
    _, secret = new_key(keys, "rpm", "--rpm", "3")
    ready(gw, secret)  # one request counted
    remaining = [call(gw, "POST", "/v1/chat/completions", CHAT, secret).headers["x-ratelimit-remaining-requests"]
                 for _ in range(2)]
    assert remaining == ["1", "0"]
    refused = call(gw, "POST", "/v1/chat/completions", CHAT, secret)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    ollama = call(gw, "POST", "/api/chat", CHAT, secret)
    assert ollama.status_code == 429 and "Rate limit" in ollama.json()["error"]


def test_tpm_reserved_while_a_stream_runs_then_settled(gw_b: Gateway, keys: Keys, llm: FakeLLM) -> None:
    gw = gw_b
    _, secret = new_key(keys, "tpm", "--tpm", "1000")
    ready(gw, secret)
    big = {**CHAT, "max_tokens": 900}
    llm.control(delay_ms=300)
    streamed: dict[str, Any] = {}

    def stream() -> None:
        with httpx.stream("POST", f"{gw.base_url}/chat/completions", json={**big, "stream": True},
                          headers=auth(secret), timeout=20) as resp:
            streamed["status"] = resp.status_code
            streamed["body"] = resp.read()

    worker = threading.Thread(target=stream)
    worker.start()
    time.sleep(0.5)  # the stream holds its 900 tokens (plus its prompt) ...
    held = call(gw, "POST", "/v1/chat/completions", big, secret)
    worker.join()
    llm.control()
    assert streamed["status"] == 200 and held.status_code == 429
    assert held.headers["x-ratelimit-limit-tokens"] == "1000"
    time.sleep(0.3)
    after = call(gw, "POST", "/v1/chat/completions", big, secret)   # ... until its real usage settled it
    assert after.status_code == 200, after.text


def test_budget_spent_is_insufficient_quota(gw: Gateway, keys: Keys) -> None:
    _, secret = new_key(keys, "budget", "--budget-usd", "0.00001", "--period", "day")
    ready(gw, secret)
    priced = {**CHAT, "model": "coder"}  # $1 / $2 per million tokens in the catalog
    assert call(gw, "POST", "/v1/chat/completions", priced, secret).status_code == 200
    deadline = time.monotonic() + 5
    while (resp := call(gw, "POST", "/v1/chat/completions", priced, secret)).status_code == 200:
        assert time.monotonic() < deadline
    assert resp.status_code == 429
    assert resp.json()["error"]["type"] == "insufficient_quota" and resp.json()["error"]["code"] == "insufficient_quota"


def test_limits_and_revocation_hold_across_workers_and_replicas(gw: Gateway, gw_b: Gateway, keys: Keys) -> None:
    name, secret = new_key(keys, "shared", "--rpm", "6")
    ready(gw, secret)
    ready(gw_b, secret)                      # two counted, one on each gateway
    for target in (gw, gw_b, gw, gw_b):      # gw has two workers: whichever takes it
        assert call(gw if target is gw else gw_b, "GET", "/v1/models", None, secret).status_code == 200
        time.sleep(1.0)                      # > one sync (0.1 s) with room for a loaded CI box: every
                                             # worker has seen the others' counts
    assert call(gw, "GET", "/v1/models", None, secret).status_code == 429
    assert call(gw_b, "GET", "/v1/models", None, secret).status_code == 429
    _, other = new_key(keys, "revoked")
    admin_name, admin = new_key(keys, "admin", "--admin")
    ready(gw_b, other)
    ready(gw, admin)
    assert call(gw, "DELETE", f"/admin/keys/{name}", None, admin).json()["revoked"] is True
    keys("revoke", _name_of(keys, other))
    revoked_at = time.monotonic()
    assert wait_status(gw_b, other, 401) < 5.0
    time.sleep(max(0.0, revoked_at + 1.5 - time.monotonic()))
    assert {call(gw, "GET", "/v1/models", None, other).status_code for _ in range(6)} == {401}  # both workers
    rows = _audit(name)
    assert ("key.revoked", admin_name) in [(r[0], r[1]) for r in rows]


def _name_of(keys: Keys, secret: str) -> str:
    line = next(ln for ln in keys("list") if secret[:9] in ln)
    return line.split()[0]


def _audit(key_name: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(_db()) as conn:
        return conn.execute("SELECT event, actor, status FROM audit_log WHERE key_name = %s ORDER BY id",
                            (key_name,)).fetchall()


def test_admin_keys_over_http_and_the_audit_log(gw: Gateway, keys: Keys) -> None:
    admin_name, admin = new_key(keys, "root", "--admin")
    ready(gw, admin)
    name = unique("http")
    created = call(gw, "POST", "/admin/keys", {"name": name, "models": ["fake-*"], "rpm": 100}, admin)
    assert created.status_code == 201, created.text
    secret = created.json()["key"]
    assert secret.startswith("appl-") and created.json()["models"] == ["fake-*"]
    listed = call(gw, "GET", "/admin/keys", None, admin)
    assert name in listed.text and secret not in listed.text and "sha256" not in listed.text
    ready(gw, secret)
    assert call(gw, "POST", "/admin/keys", {"name": name}, admin).status_code == 400   # exists
    assert call(gw, "POST", "/admin/keys", {"name": "x", "rpm": -1}, admin).status_code == 400
    rotated = call(gw, "POST", f"/admin/keys/{name}/rotate", None, admin).json()["key"]
    wait_status(gw, secret, 401)
    # Both workers know the new secret before it is revoked: else a worker that has not read the
    # rotation yet answers 401 for an unknown key, and no denial names the revoked one.
    known = 0
    deadline = time.monotonic() + 10
    while known < 6 and time.monotonic() < deadline:
        known = known + 1 if call(gw, "GET", "/v1/models", None, rotated).status_code == 200 else 0
        time.sleep(0.05)
    assert call(gw, "DELETE", f"/admin/keys/{name}", None, admin).status_code == 200
    wait_status(gw, rotated, 401)
    deadline = time.monotonic() + 10   # the audit queue is written every sync, from each worker
    while True:
        events = [(e, actor, status) for e, actor, status in _audit(name)]
        if any(e == "denied" and s == 401 for e, _, s in events) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [e for e, _, _ in events if e.startswith("key.")] == ["key.created", "key.rotated", "key.revoked"]
    assert all(actor == admin_name for e, actor, _ in events if e.startswith("key."))
    assert any(e == "denied" and s == 401 for e, _, s in events)   # the revoked key, by name
    calls = _audit(admin_name)
    assert any(e == "admin.call" and s == 201 for e, _, s in calls)
    with psycopg.connect(_db()) as conn:
        dump = str(conn.execute("SELECT * FROM audit_log").fetchall())
    assert secret not in dump and rotated not in dump and admin not in dump


def test_stored_responses_are_the_creating_keys_own(gw: Gateway, keys: Keys) -> None:
    """Another key (an admin one too) gets what an unknown id gets: nothing is revealed."""
    a_name, a = new_key(keys, "resp-a")
    _, b = new_key(keys, "resp-b")
    _, root = new_key(keys, "resp-root", "--admin")
    ready(gw, a)
    created = call(gw, "POST", "/v1/responses", {"model": "fake-model", "input": "hi"}, a)
    assert created.status_code == 200, created.text
    rid = created.json()["id"]
    assert call(gw, "GET", f"/v1/responses/{rid}", None, a).json()["id"] == rid
    with psycopg.connect(_db()) as conn:
        assert conn.execute("SELECT owner FROM api_responses WHERE id = %s", (rid,)).fetchone() == (a_name,)
    for other in (b, root):
        for method, path in (("GET", f"/v1/responses/{rid}"), ("DELETE", f"/v1/responses/{rid}"),
                             ("GET", f"/v1/responses/{rid}/input_items")):
            theirs = call(gw, method, path, None, other)
            unknown = call(gw, method, path.replace(rid, "resp_unknown"), None, other)
            assert theirs.status_code == unknown.status_code == 404, (method, path, theirs.text)
            assert theirs.json()["error"] == {**unknown.json()["error"],
                                              "message": unknown.json()["error"]["message"].replace("resp_unknown", rid)}
        continued = call(gw, "POST", "/v1/responses",
                         {"model": "fake-model", "input": "more", "previous_response_id": rid}, other)
        assert continued.status_code == 400, continued.text
        assert continued.json()["error"]["code"] == "previous_response_not_found"
    mine = call(gw, "POST", "/v1/responses", {"model": "fake-model", "input": "more", "previous_response_id": rid}, a)
    assert mine.status_code == 200, mine.text
    assert call(gw, "DELETE", f"/v1/responses/{rid}", None, a).json() == {"id": rid, "object": "response",
                                                                          "deleted": True}
    assert call(gw, "GET", f"/v1/responses/{rid}", None, a).status_code == 404


def test_weak_keys_are_refused(keys: Keys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("sk-1234\n"))
    keys("list")  # (the database's URL set)
    assert cli_main(["keys", "create", unique("weak"), "--from-stdin"]) == 1
    assert "well-known" in capsys.readouterr().err
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(f'[[api_keys]]\nname = "home"\nsha256 = "{hashlib.sha256(b"changeme").hexdigest()}"\n')
    assert cli_main(["check-config", "--config", str(catalog)]) == 2
    assert "api_keys[0].sha256" in capsys.readouterr().err


def test_a_public_bind_without_any_key_refuses_to_start(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "appliance", "serve", "--host", "0.0.0.0", "--port",
                           str(procs.free_port())], env=procs.child_env(APPLIANCE_STATE_DIR=str(tmp_path)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    line, = done.stderr.strip().splitlines()
    assert "no API keys" in line and "APPLIANCE_ALLOW_NO_KEYS" in line


def _db() -> str:
    return os.environ["APPLIANCE_DATABASE_URL"]


def test_store_unreachable_static_keys_and_local_limits(fake_llm: FakeLLM, tmp_path: Path) -> None:
    """PostgreSQL down from the start: the catalog's key works, limited by this worker's own
    counts; any other key is refused (the store has not answered: no open door); said once."""
    secret = "appl-static-0123456789abcdefghij"
    catalog = catalog_for(fake_llm.port, extra=f'\n[[api_keys]]\nname = "static"\nrpm = 2\n'
                                                f'sha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"\n')
    dead = f"postgresql://nobody@127.0.0.1:{procs.free_port()}/none?connect_timeout=1"
    gw = start_gateway(tmp_path, catalog, APPLIANCE_DATABASE_URL=dead, **FAST_SYNC)
    try:
        assert [call(gw, "GET", "/v1/models", None, secret).status_code for _ in range(3)] == [200, 200, 429]
        assert call(gw, "GET", "/v1/models", None, "appl-unknown-0123456789abcdef").status_code == 401
        time.sleep(1.0)
        said = [ln for ln in gw.log_lines() if "access store unreachable" in ln.get("msg", "")]
        assert len(said) == 1
    finally:
        procs.stop(gw.proc)


def test_a_restart_while_the_store_is_down_keeps_the_keys_it_last_knew(fake_llm: FakeLLM, access_db: str,
                                                                       keys: Keys, tmp_path: Path) -> None:
    """The key snapshot under the state dir: a worker that starts while PostgreSQL is down lets in
    the keys the store last gave it (and nobody else), instead of refusing every request."""
    _, secret = new_key(keys, "snap")
    gw = start_gateway(tmp_path, catalog_for(fake_llm.port), APPLIANCE_DATABASE_URL=access_db, **FAST_SYNC)
    try:
        ready(gw, secret)
    finally:
        procs.stop(gw.proc)
    snapshot = (tmp_path / "state" / "access" / "keys.json").read_text()
    assert secret not in snapshot and "snap-" in snapshot
    dead = f"postgresql://nobody@127.0.0.1:{procs.free_port()}/none?connect_timeout=1"
    gw = start_gateway(tmp_path, catalog_for(fake_llm.port), APPLIANCE_DATABASE_URL=dead, **FAST_SYNC)
    try:
        assert call(gw, "GET", "/v1/models", None, secret).status_code == 200
        assert call(gw, "GET", "/v1/models", None, "appl-unknown-0123456789abcdef").status_code == 401
        assert call(gw, "GET", "/v1/models").status_code == 401
        assert any("key snapshot" in ln.get("msg", "") for ln in gw.log_lines())
    finally:
        procs.stop(gw.proc)


def test_a_keyless_gateway_restarted_while_the_store_is_down_still_serves(fake_llm: FakeLLM, pg_url: str,
                                                                          tmp_path: Path) -> None:
    """On loopback with no keys anywhere, PostgreSQL going down does not lock everyone out."""
    gw = start_gateway(tmp_path, catalog_for(fake_llm.port), APPLIANCE_DATABASE_URL=pg_url, **FAST_SYNC)
    try:
        assert call(gw, "GET", "/v1/models").status_code == 200
    finally:
        procs.stop(gw.proc)
    dead = f"postgresql://nobody@127.0.0.1:{procs.free_port()}/none?connect_timeout=1"
    gw = start_gateway(tmp_path, catalog_for(fake_llm.port), APPLIANCE_DATABASE_URL=dead, **FAST_SYNC)
    try:
        assert call(gw, "GET", "/v1/models").status_code == 200
        assert call(gw, "POST", "/v1/chat/completions", CHAT).status_code == 200
    finally:
        procs.stop(gw.proc)
