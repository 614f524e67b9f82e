"""Usage end to end: requests through a real gateway, its events through real NATS JetStream
and the real persister into PostgreSQL, read back by `/admin/usage` and `appliance usage`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import openai
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.db.usage import prune, record
from appliance.embedded.nats import EmbeddedNats
from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway
from tests.events.conftest import PersisterProc

T = TypeVar("T")

MODEL = "usage-priced"          # only these tests ask for these names: other tests' rows do not count
CHEAP = "qwen3-usage"
ADMIN = "appl-usage-admin-key-0123456789"
ALICE = "appl-usage-alice-key-9876543210"
EXTRA = f"""
[[api_keys]]
name = "usage-admin"
sha256 = "{hashlib.sha256(ADMIN.encode()).hexdigest()}"
admin = true

[[api_keys]]
name = "usage-alice"
sha256 = "{hashlib.sha256(ALICE.encode()).hexdigest()}"

[[models]]
id = "{MODEL}"
backend = "local-vllm"
upstream_id = "fake-model"
price_input_per_mtok = 1000.0
price_output_per_mtok = 2000.0
"""

GPU_MODEL = "usage-gpu"        # an unpriced model on a backend priced per GPU-hour, for a key with a budget
GPU_KEY = "appl-usage-gpu-budget-key-0246813579"
GPU = f"""
[[api_keys]]
name = "usage-gpu"
sha256 = "{hashlib.sha256(GPU_KEY.encode()).hexdigest()}"
budget_usd = 0.000001
period = "day"

[[backends]]
name = "gpu-vllm"
kind = "vllm"
base_url = "http://127.0.0.1:{{port}}/v1"
discover = false
gpu_hour_usd = 3600.0

[[models]]
id = "{GPU_MODEL}"
backend = "gpu-vllm"
upstream_id = "fake-model"
"""


def get(gw: Gateway, path: str, key: str = ADMIN) -> Any:
    req = urllib.request.Request(f"{gw.url}{path}", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def chat(gw: Gateway, model: str, stream: bool = False, key: str = ALICE) -> tuple[int, dict[str, Any] | None]:
    body = {"model": model, "messages": [{"role": "user", "content": "count to eight"}], "stream": stream}
    req = urllib.request.Request(f"{gw.base_url}/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = resp.read()
            return resp.status, None if stream else json.loads(data)
    except urllib.error.HTTPError as err:
        return err.code, None


def mine(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["model"] in (MODEL, CHEAP, f"dead-{MODEL}")]


@pytest.fixture(scope="module")
def world(fake_llm: FakeLLM, migrated_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    tmp = tmp_path_factory.mktemp("usage")
    nats = EmbeddedNats(tmp / "nats")
    nats.start()
    # Rows past their retention, there before the persister starts: its first prune removes them.
    asyncio.run(_old_rows(migrated_pg))
    persister = PersisterProc(nats.url, migrated_pg, tmp / "persister.log", APPLIANCE_USAGE__RAW_RETENTION_DAYS="2",
                              APPLIANCE_USAGE__ROLLUP_RETENTION_DAYS="5", APPLIANCE_HISTORY__RETENTION_DAYS="2",
                              APPLIANCE_HISTORY__RESPONSES_RETENTION_DAYS="4").start()
    gw = start_gateway(tmp / "gw", catalog_for(fake_llm.port, procs.free_port(), extra=EXTRA + GPU.format(port=fake_llm.port)),
                       APPLIANCE_NATS_URL=nats.url, APPLIANCE_DATABASE_URL=migrated_pg)
    try:
        yield gw, migrated_pg
    finally:
        procs.stop(gw.proc)
        persister.stop()
        nats.stop()


def _row(eid: str, ts: datetime, model: str, latency_ms: float = 10.0, status: int = 200) -> dict[str, Any]:
    return {"event_id": eid, "correlation_id": eid, "ts": ts, "kind": "chat", "key": "old", "model": model,
            "backend": "b", "prompt_tokens": 3, "completion_tokens": 4, "cost_usd": 0.5, "gpu_seconds": 0.25,
            "latency_ms": latency_ms, "ttft_ms": None, "status": status}


async def _old_rows(url: str) -> None:
    now = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.cursor() as cur:
        await record(cur, [_row("retention-3d", now - timedelta(days=3), "retention-model"),
                           _row("retention-6d", now - timedelta(days=6), "retention-model")])
        for eid, age in (("history-1d", 1), ("history-3d", 3), ("history-5d", 5)):
            await cur.execute(
                "INSERT INTO chat_history (event_id, correlation_id, ts, model, backend, route, streaming, messages,"
                " response_text) VALUES (%s, %s, %s, 'm', 'b', 'direct', false, '[]', '')",
                (eid, eid, now - timedelta(days=age)))
            await cur.execute("INSERT INTO tool_calls (event_id, correlation_id, ts, call_index, name, arguments, model)"
                              " VALUES (%s, %s, %s, 0, 'f', '{}', 'm')", (eid, eid, now - timedelta(days=age)))
            await cur.execute("INSERT INTO api_responses (id, created_at, correlation_id, model, status, input_items,"
                              " response) VALUES (%s, %s, %s, 'm', 'completed', '[]', '{}')",
                              (f"resp_{eid}", now - timedelta(days=age), eid))


def wait_usage(gw: Gateway, expected: int, timeout: float = 30.0) -> tuple[list[dict[str, Any]], float]:
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    while time.monotonic() - started < timeout:
        rows = mine(get(gw, "/admin/usage?group_by=model,backend")["data"])
        if sum(r["requests"] for r in rows) >= expected:
            break
        time.sleep(0.1)
    return rows, time.monotonic() - started


def test_usage_totals_equal_the_requests_made_within_seconds(world: tuple[Gateway, str]) -> None:
    gw, db = world
    answers = [chat(gw, MODEL) for _ in range(5)]
    assert all(status == 200 for status, _ in answers)
    assert chat(gw, MODEL, stream=True)[0] == 200
    assert chat(gw, CHEAP, key=ADMIN)[0] == 200
    assert chat(gw, f"dead-{MODEL}")[0] == 502          # the dead backend: counted as an error
    prompt = sum(a["usage"]["prompt_tokens"] for _, a in answers if a)
    completion = sum(a["usage"]["completion_tokens"] for _, a in answers if a)

    rows, waited = wait_usage(gw, 8)
    assert waited < 10, f"usage took {waited:.1f} s to show"
    by_model = {r["model"]: r for r in rows}
    priced = by_model[MODEL]
    assert (priced["requests"], priced["errors"], priced["backend"]) == (6, 0, "local-vllm")
    # the stream's usage is the same as a JSON answer's (the fake LLM counts the same way)
    assert priced["prompt_tokens"] == prompt * 6 // 5 and priced["completion_tokens"] == completion * 6 // 5
    expected_cost = (priced["prompt_tokens"] * 1000.0 + priced["completion_tokens"] * 2000.0) / 1e6
    assert priced["cost_usd"] == pytest.approx(expected_cost, rel=1e-6)
    assert priced["gpu_seconds"] > 0                     # a vllm backend is local: its time counts
    assert 0 < priced["latency_p50_ms"] <= priced["latency_p95_ms"] < 5000
    assert priced["key"] is None and priced["day"] is None      # not grouped by key
    assert by_model[CHEAP]["requests"] == 1 and by_model[CHEAP]["cost_usd"] == 0
    assert (by_model[f"dead-{MODEL}"]["requests"], by_model[f"dead-{MODEL}"]["errors"]) == (1, 1)

    # No double counting: the raw rows are one per request, and the rollup agrees with them.
    with psycopg.connect(db) as conn:
        raw = conn.execute("SELECT count(*), sum(prompt_tokens) FROM usage_events WHERE model = %s",
                           (MODEL,)).fetchone()
    assert raw == (6, priced["prompt_tokens"])

    # the same totals through the other groupings
    days = get(gw, "/admin/usage?group_by=day&since=1h")["data"]
    assert date.today().isoformat() in {d["day"] for d in days} or (datetime.now(UTC).date().isoformat()
                                                                    in {d["day"] for d in days})
    assert all(d["model"] is None and d["key"] is None for d in days)
    keys = {k["key"]: k for k in get(gw, "/admin/usage?group_by=key")["data"]}
    assert (keys["usage-alice"]["requests"], keys["usage-alice"]["errors"]) == (7, 1)
    assert keys["usage-admin"]["requests"] == 1 and keys["usage-alice"]["model"] is None
    assert keys["usage-alice"]["cost_usd"] == pytest.approx(expected_cost, rel=1e-6)
    per_key_model = get(gw, "/admin/usage?group_by=key,model")["data"]
    assert {(r["key"], r["model"]): r["requests"] for r in per_key_model if r["key"] in keys and r["model"] in (
        MODEL, CHEAP)} == {("usage-alice", MODEL): 6, ("usage-admin", CHEAP): 1}
    backends = {r["backend"]: r for r in get(gw, "/admin/usage?group_by=backend")["data"]}
    assert backends["local-vllm"]["requests"] >= 7 and backends["dead"]["errors"] >= 1
    future = get(gw, "/admin/usage?group_by=model&since=2099-01-01")["data"]
    assert future == []

    # The GenAI histograms on /metrics, per model, backend and key.
    with urllib.request.urlopen(f"{gw.url}/metrics", timeout=10) as resp:
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(resp.read().decode()) for s in family.samples}
    labels = {"gen_ai_operation_name": "chat", "model": MODEL, "backend": "local-vllm", "key": "usage-alice"}

    def sample(name: str, **extra: str) -> float | None:
        return samples.get((name, tuple(sorted({**labels, **extra}.items()))))

    assert sample("gen_ai_client_token_usage_count", gen_ai_token_type="input") == 6
    assert sample("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == priced["completion_tokens"]
    assert sample("gen_ai_client_operation_duration_seconds_count") == 6
    assert sample("gen_ai_server_time_to_first_token_seconds_count") == 1      # the one stream
    assert sample("gen_ai_server_time_per_output_token_seconds_count") == 1
    cost = samples.get(("appliance_key_cost_usd_total", tuple(sorted(
        {"model": MODEL, "backend": "local-vllm", "key": "usage-alice"}.items()))))
    assert cost == pytest.approx(expected_cost, rel=1e-6)


def test_a_budget_spent_on_gpu_hours_is_insufficient_quota_and_its_cost_is_in_the_usage(
        world: tuple[Gateway, str]) -> None:
    gw, _ = world
    client = openai.OpenAI(base_url=gw.base_url, api_key=GPU_KEY, max_retries=0)
    answered = 0
    deadline = time.monotonic() + 5
    with pytest.raises(openai.RateLimitError) as refused:   # $1 a second of the backend's time, $0.000001 a day
        while time.monotonic() < deadline:
            client.chat.completions.create(model=GPU_MODEL, messages=[{"role": "user", "content": "hi"}])
            answered += 1
    assert answered >= 1 and refused.value.code == "insufficient_quota"
    assert int(refused.value.response.headers["retry-after"]) > 0
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and sum(r["requests"] for r in rows) < answered:
        rows = [r for r in get(gw, "/admin/usage?group_by=key,model")["data"] if r["model"] == GPU_MODEL]
        time.sleep(0.1)
    [row] = rows
    assert (row["key"], row["requests"], row["errors"]) == ("usage-gpu", answered, 0)
    assert row["gpu_seconds"] > 0 and row["cost_usd"] > 0
    assert row["cost_usd"] == pytest.approx(row["gpu_seconds"], abs=0.001)    # 3600 $/h: a dollar a second


def test_appliance_usage_prints_the_same_as_a_table(world: tuple[Gateway, str]) -> None:
    gw, db = world
    rows, _ = wait_usage(gw, 8)
    env = procs.child_env(APPLIANCE_DATABASE_URL=db)
    out = subprocess.run([sys.executable, "-m", "appliance", "usage", "--group-by", "model,backend", "--since", "1d"],
                         env=env, capture_output=True, text=True, timeout=60, cwd=procs.ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["model", "backend", "requests"]
    priced = next(line.split() for line in lines if line.startswith(MODEL + " "))
    row = next(r for r in rows if r["model"] == MODEL)
    assert priced[1:5] == ["local-vllm", str(row["requests"]), str(row["prompt_tokens"]), str(row["completion_tokens"])]
    as_json = subprocess.run([sys.executable, "-m", "appliance", "usage", "--group-by", "model,backend", "--json"],
                             env=env, capture_output=True, text=True, timeout=60, cwd=procs.ROOT)
    assert next(r for r in json.loads(as_json.stdout)["data"] if r["model"] == MODEL) == row


def test_appliance_usage_refuses_a_bad_grouping_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.config import Settings
    from appliance.db.usage_report import run

    assert run(Settings(database_url="postgresql://nobody@127.0.0.1:1/none"), "colour", None, None) == 2
    assert "group_by must be" in capsys.readouterr().err


def test_bad_usage_queries_are_400s_and_other_keys_are_refused(world: tuple[Gateway, str]) -> None:
    gw, _ = world
    try:
        get(gw, "/admin/usage", key=ALICE)
    except urllib.error.HTTPError as err:
        assert err.code == 403
    else:
        raise AssertionError("a key without admin read usage")
    for query, param in (("group_by=colour", "group_by"), ("since=yesterday", "since"),
                         ("since=2026-12-02&until=2026-12-01", "until")):
        try:
            get(gw, f"/admin/usage?{query}")
        except urllib.error.HTTPError as err:
            assert err.code == 400
            assert json.loads(err.read())["error"]["param"] == param
        else:
            raise AssertionError(f"{query} was accepted")


def _read_until(db: str, read: Callable[[psycopg.Connection[Any]], T], done: Callable[[T], bool],
                timeout: float = 15.0) -> T:
    """What `read` finds once `done` says so (the persister prunes at start), or at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(db) as conn:
            got = read(conn)
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_retention_prunes_raw_rows_and_rollups_past_their_days(world: tuple[Gateway, str]) -> None:
    """The persister started with raw rows kept 2 days and rollups 5: its first prune left the
    3-day-old request only in the rollup, and the 6-day-old one nowhere."""
    def read(conn: psycopg.Connection[Any]) -> tuple[list[Any], list[Any]]:
        return (conn.execute("SELECT event_id FROM usage_events WHERE model = 'retention-model'").fetchall(),
                conn.execute("SELECT requests FROM usage_hourly WHERE model = 'retention-model'").fetchall())

    raw, hours = _read_until(world[1], read, lambda got: not got[0] and len(got[1]) == 1)
    assert raw == [] and hours == [(1,)]


def test_retention_prunes_history_and_stored_responses_past_their_days(world: tuple[Gateway, str]) -> None:
    """History kept 2 days, stored Responses 4: the persister's first prune left the 1-day-old
    history rows, and the 1- and 3-day-old responses."""
    def read(conn: psycopg.Connection[Any]) -> tuple[list[Any], list[Any], list[Any]]:
        return (conn.execute("SELECT event_id FROM chat_history WHERE event_id LIKE 'history-%'").fetchall(),
                conn.execute("SELECT event_id FROM tool_calls WHERE event_id LIKE 'history-%'").fetchall(),
                conn.execute("SELECT id FROM api_responses WHERE id LIKE 'resp_history-%' ORDER BY id").fetchall())

    chats, calls, kept = _read_until(world[1], read, lambda got: len(got[0]) == 1 and len(got[2]) == 2)
    assert chats == calls == [("history-1d",)]
    assert kept == [("resp_history-1d",), ("resp_history-3d",)]


async def test_a_redelivered_usage_event_counts_once_and_prune_keeps_what_is_recent(migrated_pg: str) -> None:
    now = datetime.now(UTC)
    rows = [_row(f"dup-{i}", now, "dup-model", latency_ms=10.0 * (i + 1), status=500 if i == 0 else 200)
            for i in range(20)]
    async with await psycopg.AsyncConnection.connect(migrated_pg) as conn:
        async with conn.cursor() as cur:
            assert await record(cur, rows) == 20
            assert await record(cur, rows[:5] + rows[:5]) == 0     # a redelivery, twice over
        await conn.commit()
        await conn.set_autocommit(True)
        await prune(conn, 1, 1)                                     # today's rows are kept
        kept = await (await conn.execute("SELECT count(*) FROM usage_events WHERE model = 'dup-model'")).fetchone()
        got = await (await conn.execute(
            "SELECT requests, prompt_tokens, errors, latency_buckets FROM usage_hourly WHERE model = 'dup-model'"
        )).fetchone()
    assert got is not None and kept == (20,)
    assert got[:3] == (20, 60, 1) and sum(got[3]) == 20


def test_latency_percentiles_from_the_histogram_are_within_a_bucket() -> None:
    from appliance.domain.usage import BUCKETS, bucket, percentile

    latencies = [float(ms) for ms in range(1, 1001)]
    counts = [0] * BUCKETS
    for ms in latencies:
        counts[bucket(ms)] += 1
    assert percentile(counts, 0.5) == pytest.approx(500, rel=0.09)
    assert percentile(counts, 0.95) == pytest.approx(950, rel=0.09)
    assert percentile([0] * BUCKETS, 0.5) is None
    assert bucket(0.2) == 0 and bucket(1e12) == BUCKETS - 1


def test_group_by_and_times_are_parsed_or_refused() -> None:
    from appliance.domain.errors import InvalidRequest
    from appliance.domain.usage import parse_query

    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    q = parse_query("model, day,model", "7d", "2026-12-01T10:00:00Z", now=now)
    assert q.group_by == ("model", "day")
    assert q.since == now - timedelta(days=7) and q.until == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert parse_query(None, "2026-11-30", None).since == datetime(2026, 11, 30, tzinfo=UTC)
    for args in ((",", None, None), ("user", None, None), ("key", "soon", None)):
        with pytest.raises(InvalidRequest):
            parse_query(*args)

