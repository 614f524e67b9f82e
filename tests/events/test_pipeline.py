"""The event pipeline end to end: real NATS JetStream, real PostgreSQL, the real persister."""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import nats
import openai

from appliance.domain.events import EventRecorder
from appliance.domain.records import EmbeddingOutcome
from appliance.embedded.nats import EmbeddedNats
from appliance.events import metrics
from appliance.events.publisher import EventPublisher
from appliance.events.spool import Spool
from tests import procs
from tests.conftest import FakeLLM, catalog_for, start_gateway
from tests.events.conftest import PersisterProc, count, wait_count

EMBED_ROWS = "SELECT count(*) FROM embedding_calls WHERE correlation_id LIKE %s"


def outcome(prefix: str, i: int) -> EmbeddingOutcome:
    return EmbeddingOutcome(correlation_id=f"{prefix}-{i}", model="m", inputs=1, tokens=3, dimensions=384,
                            latency_ms=1.0, started_at=1_700_000_000 + i)


def publisher(nats_url: str, spool_dir: Path) -> EventPublisher:
    spool = Spool(spool_dir, max_bytes=256 << 20, segment_bytes=1 << 20, fsync="batch")
    return EventPublisher(nats_url, spool, queue_max=1000, publish_timeout_s=1.0, duplicate_window_s=7200, retry_s=0.2)


async def test_10000_events_across_a_nats_outage_are_stored_exactly_once(
        tmp_path: Path, migrated_pg: str, persister: Callable[..., PersisterProc]) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    spooled, replayed = metrics.SPOOLED._value.get(), metrics.REPLAYED._value.get()
    pub = publisher(server.url, tmp_path / "spool")
    await pub.start()
    recorder = EventRecorder(pub)
    p = persister(server.url).start()
    try:
        for i in range(10_000):
            recorder.embedding(outcome("outage", i))
            if i % 200 == 0:
                await asyncio.sleep(0)  # let the publisher run, as a serving gateway would
            if i == 5_000:
                server.stop()  # NATS goes away mid-stream
        await asyncio.sleep(0.5)
        assert pub.spool.size > 0  # the second half waits on disk
        server.start()  # and comes back, same port, same store
        n = await asyncio.to_thread(wait_count, migrated_pg, EMBED_ROWS, 10_000, "outage-%", timeout=120)
        assert n == 10_000
        await asyncio.sleep(1.5)  # any duplicate would land now
        assert count(migrated_pg, EMBED_ROWS, "outage-%") == 10_000
        assert count(migrated_pg, "SELECT count(DISTINCT correlation_id) FROM embedding_calls WHERE correlation_id LIKE %s",
                     "outage-%") == 10_000
        assert pub.spool.size == 0
        assert metrics.SPOOLED._value.get() - spooled >= 4_000  # the outage really went through the spool
        assert metrics.REPLAYED._value.get() - replayed == metrics.SPOOLED._value.get() - spooled
    finally:
        await pub.close()
        p.stop()
        server.stop()


async def test_a_persister_killed_mid_batch_restarts_and_stores_every_event_once(
        tmp_path: Path, migrated_pg: str, persister: Callable[..., PersisterProc]) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        pub = publisher(server.url, tmp_path / "spool")
        await pub.start()
        recorder = EventRecorder(pub)
        for i in range(6_000):
            recorder.embedding(outcome("kill", i))
            if i % 500 == 0:
                await asyncio.sleep(0)
        p = persister(server.url, APPLIANCE_EVENTS__PERSISTER_BATCH="200").start()
        await asyncio.to_thread(wait_count, migrated_pg, EMBED_ROWS, 1, "kill-%", timeout=60)
        p.proc.send_signal(signal.SIGKILL)  # mid-stream: some batches committed, maybe not acked
        p.proc.wait(10)
        partial = count(migrated_pg, EMBED_ROWS, "kill-%")
        assert 0 < partial < 6_000 or partial == 6_000
        persister(server.url).start()
        assert await asyncio.to_thread(wait_count, migrated_pg, EMBED_ROWS, 6_000, "kill-%", timeout=90) == 6_000
        await asyncio.sleep(1.5)
        assert count(migrated_pg, EMBED_ROWS, "kill-%") == 6_000
        await pub.close()


async def test_a_malformed_message_is_dead_lettered_and_the_next_ones_flow(
        tmp_path: Path, migrated_pg: str, persister: Callable[..., PersisterProc]) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        p = persister(server.url, APPLIANCE_EVENTS__PERSISTER_MAX_DELIVERIES="2").start()
        await asyncio.to_thread(lambda: wait_ready(p))
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.publish("pipeline.knowledge.embedding", b"{not json", headers={"Nats-Msg-Id": "bad-1"})
        await js.publish("pipeline.knowledge.retrieve", json.dumps({"schema_version": 1}).encode(),
                         headers={"Nats-Msg-Id": "bad-2"})
        pub = publisher(server.url, tmp_path / "spool")
        await pub.start()
        for i in range(3):
            EventRecorder(pub).embedding(outcome("after-bad", i))
        assert await asyncio.to_thread(wait_count, migrated_pg, EMBED_ROWS, 3, "after-bad-%", timeout=30) == 3
        assert await asyncio.to_thread(wait_count, migrated_pg,
                                       "SELECT count(*) FROM dead_letters WHERE msg_id IN ('bad-1', 'bad-2')", 2,
                                       timeout=30) == 2
        errors = count(migrated_pg, "SELECT count(*) FROM dead_letters WHERE msg_id = 'bad-1' AND error LIKE 'invalid JSON%%'"
                       " AND deliveries = 2")
        assert errors == 1
        await pub.close()
        await nc.close()


def wait_ready(p: PersisterProc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.status().get("status") == "ready":
            return
        time.sleep(0.1)
    raise AssertionError(f"persister not ready: {p.status()}")


def chat_latencies(base_url: str, n: int) -> list[float]:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        client.chat.completions.create(model="coder", messages=[{"role": "user", "content": "hi"}])
        out.append((time.perf_counter() - t) * 1000)
    return out


def test_chat_is_not_slowed_by_a_nats_outage(tmp_path: Path, fake_llm: FakeLLM) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        up = start_gateway(tmp_path / "up", catalog_for(fake_llm.port), APPLIANCE_NATS_URL=server.url)
        down = start_gateway(tmp_path / "down", catalog_for(fake_llm.port),
                             APPLIANCE_NATS_URL=f"nats://127.0.0.1:{procs.free_port()}")
        try:
            chat_latencies(up.base_url, 20)
            chat_latencies(down.base_url, 20)  # warm both
            with_nats = statistics.median(chat_latencies(up.base_url, 150))
            without = statistics.median(chat_latencies(down.base_url, 150))
        finally:
            procs.stop(up.proc)
            procs.stop(down.proc)
    # Every chat succeeded (no exception) and the outage costs the client nothing measurable.
    assert without <= with_nats * 1.25 + 0.5, (with_nats, without)
    spool_dir = tmp_path / "down" / "state" / "spool" / "0"
    assert any(p.stat().st_size > 0 for p in spool_dir.glob("*.seg"))  # its events wait on disk


def test_the_spool_survives_a_gateway_restart_and_is_replayed(
        tmp_path: Path, fake_llm: FakeLLM, migrated_pg: str, persister: Callable[..., PersisterProc]) -> None:
    server = EmbeddedNats(tmp_path / "nats")  # not started: NATS is down at first
    catalog = catalog_for(fake_llm.port)
    gw = start_gateway(tmp_path / "gw", catalog, APPLIANCE_NATS_URL=server.url)
    ids = []
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        for i in range(5):
            raw = client.chat.completions.with_raw_response.create(
                model="coder", messages=[{"role": "user", "content": f"question {i}"}],
                extra_headers={"X-Correlation-ID": f"spool-restart-{tmp_path.name[-8:]}-{i}"})
            ids.append(raw.headers["x-correlation-id"])
    finally:
        assert procs.stop(gw.proc) == 0
    assert any(p.stat().st_size > 0 for p in (tmp_path / "gw" / "state" / "spool" / "0").glob("*.seg"))
    server.start()
    p = persister(server.url).start()
    gw2 = start_gateway(tmp_path / "gw", catalog, APPLIANCE_NATS_URL=server.url)  # same state dir
    try:
        sql = "SELECT count(*) FROM chat_history WHERE correlation_id = ANY(%s)"
        assert wait_count(migrated_pg, sql, 5, ids, timeout=60) == 5
        assert count(migrated_pg, "SELECT count(*) FROM chat_pairs WHERE correlation_id = ANY(%s) AND prompt LIKE 'question %%'",
                     ids) == 5
    finally:
        procs.stop(gw2.proc)
        p.stop()
        server.stop()


def test_sigterm_stops_the_persister_promptly(tmp_path: Path, persister: Callable[..., PersisterProc]) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        p = persister(server.url).start()
        wait_ready(p)
        started = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(15) == 0
        assert time.monotonic() - started < 5  # under systemd's TimeoutStopSec with room to spare
        assert "persister stopped" in p.log.read_text()
