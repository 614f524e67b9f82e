"""The event pipeline end to end: real NATS JetStream, real PostgreSQL, the real persister."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import nats
import openai

from appliance.domain.records import EmbeddingOutcome
from appliance.embedded.nats import EmbeddedNats
from appliance.events.recorder import SpoolingRecorder
from appliance.events.relay import Relay
from appliance.events.spool import SpoolWriter, pending_bytes
from appliance.events.spool_root import read_status
from tests import procs
from tests.conftest import FakeLLM, catalog_for, start_gateway
from tests.events.conftest import PersisterProc, count, wait_count

EMBED_ROWS = "SELECT count(*) FROM embedding_calls WHERE correlation_id LIKE %s"


def outcome(prefix: str, i: int) -> EmbeddingOutcome:
    # Recent: rows older than the history retention (90 days) go at the persister's first prune.
    return EmbeddingOutcome(correlation_id=f"{prefix}-{i}", model="m", inputs=1, tokens=3, dimensions=384,
                            latency_ms=1.0, started_at=time.time() + i / 1000)


class Pipeline:
    """A gateway worker's spool slot and the relay publishing it, in this process."""

    def __init__(self, nats_url: str, root: Path) -> None:
        self.root = root
        self.recorder = SpoolingRecorder(SpoolWriter(root / "0", max_bytes=256 << 20, segment_bytes=1 << 20,
                                                     fsync="batch"))
        self.relay = Relay(root, nats_url, batch=512, publish_timeout_s=1.0, duplicate_window_s=7200, poll_s=0.01,
                           retry_s=0.2)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Pipeline:
        await self.recorder.start()
        self._task = asyncio.create_task(self.relay.run(self._stop))
        for _ in range(200):  # connected before the tests write: their events count as live, not replayed
            if self.relay.connected:
                break
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.recorder.close()
        self._stop.set()
        assert self._task is not None
        await self._task


async def test_10000_events_across_a_nats_outage_are_stored_exactly_once(
        tmp_path: Path, migrated_pg: str, persister: Callable[..., PersisterProc]) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    p = persister(server.url).start()
    try:
        async with Pipeline(server.url, tmp_path / "spool") as pipe:
            for i in range(10_000):
                pipe.recorder.embedding(outcome("outage", i))
                if i % 200 == 0:
                    await asyncio.sleep(0)  # let the flush task run, as a serving gateway would
                if i == 5_000:
                    server.stop()  # NATS goes away mid-stream
            await asyncio.sleep(0.5)
            assert pending_bytes(tmp_path / "spool" / "0") > 0  # the second half waits on disk
            server.start()  # and comes back, same port, same store
            n = await asyncio.to_thread(wait_count, migrated_pg, EMBED_ROWS, 10_000, "outage-%", timeout=120)
            assert n == 10_000
            await asyncio.sleep(1.5)  # any duplicate would land now
            assert count(migrated_pg, EMBED_ROWS, "outage-%") == 10_000
            assert count(migrated_pg, "SELECT count(DISTINCT correlation_id) FROM embedding_calls"
                         " WHERE correlation_id LIKE %s", "outage-%") == 10_000
            assert pending_bytes(tmp_path / "spool" / "0") == 0
            # Two events (pipeline + telemetry) per outcome, each acknowledged once; the
            # outage's half waited in the spool and counts as replayed.
            assert pipe.relay.status.published == 20_000
            assert pipe.relay.status.replayed >= 2 * 4_000
    finally:
        p.stop()
        server.stop()


async def test_a_persister_killed_mid_batch_restarts_and_stores_every_event_once(
        tmp_path: Path, migrated_pg: str, persister: Callable[..., PersisterProc]) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        async with Pipeline(server.url, tmp_path / "spool") as pipe:
            for i in range(6_000):
                pipe.recorder.embedding(outcome("kill", i))
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
        async with Pipeline(server.url, tmp_path / "spool") as pipe:
            for i in range(3):
                pipe.recorder.embedding(outcome("after-bad", i))
        assert await asyncio.to_thread(wait_count, migrated_pg, EMBED_ROWS, 3, "after-bad-%", timeout=30) == 3
        assert await asyncio.to_thread(wait_count, migrated_pg,
                                       "SELECT count(*) FROM dead_letters WHERE msg_id IN ('bad-1', 'bad-2')", 2,
                                       timeout=30) == 2
        errors = count(migrated_pg, "SELECT count(*) FROM dead_letters WHERE msg_id = 'bad-1' AND error LIKE 'invalid JSON%%'"
                       " AND deliveries = 2")
        assert errors == 1
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


def stream_messages(url: str) -> int:
    async def count_all() -> int:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            return sum([(await js.stream_info(name)).state.messages for name in ("PIPELINE", "TELEMETRY")])
        finally:
            await nc.close()
    return asyncio.run(count_all())


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def chats(base_url: str, n: int) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    for i in range(n):
        client.chat.completions.create(model="coder", messages=[{"role": "user", "content": f"question {i}"}])


def test_a_killed_relay_is_restarted_and_no_event_is_lost(tmp_path: Path, fake_llm: FakeLLM) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        gw = start_gateway(tmp_path / "gw", catalog_for(fake_llm.port), APPLIANCE_NATS_URL=server.url)
        try:
            assert wait_for(lambda: bool((read_status(gw.state_dir / "spool") or {}).get("connected")))
            first = read_status(gw.state_dir / "spool")
            assert first is not None
            os.kill(int(first["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
            chats(gw.base_url, 10)  # answered while no relay runs: the events wait in the spool
            assert wait_for(lambda: (read_status(gw.state_dir / "spool") or {}).get("pid") not in (None, first["pid"]))
            assert wait_for(lambda: stream_messages(server.url) == 20)  # chat.persist + telemetry.chat each
            assert "event relay exited; restarting it" in gw.log.read_text()
            def metrics() -> str:
                return str(urllib.request.urlopen(f"{gw.url}/metrics", timeout=5).read().decode())
            # The relay reports once a second; the new one counted all 20.
            assert wait_for(lambda: "appliance_events_published_total 20.0" in metrics(), timeout=5)
            assert "appliance_events_relay_up 1.0" in metrics()
            assert "appliance_events_chains_broken_total 0.0" in metrics()  # one publisher: no chain broke
            assert 'appliance_events_spooled_total{kind="chat"} 10.0' in metrics()
            ready = json.loads(urllib.request.urlopen(f"{gw.url}/readyz", timeout=5).read())
            assert ready["dependencies"]["nats"] == {"ok": True, "relay": "running", "spool_bytes": 0}
        finally:
            procs.stop(gw.proc)


async def spooled(root: Path, prefix: str, n: int) -> None:
    recorder = SpoolingRecorder(SpoolWriter(root / "0", max_bytes=1 << 20, segment_bytes=1 << 16))
    await recorder.start()
    for i in range(n):
        recorder.embedding(outcome(prefix, i))
    await recorder.close()


async def test_a_relay_stopped_before_it_connected_still_publishes_what_was_spooled(tmp_path: Path) -> None:
    # A gateway stopped right after it started: its relay gets SIGTERM while still starting.
    with EmbeddedNats(tmp_path / "nats") as server:
        await spooled(tmp_path / "spool", "early", 10)
        relay = Relay(tmp_path / "spool", server.url, batch=512, publish_timeout_s=2.0, duplicate_window_s=7200)
        stop = asyncio.Event()
        stop.set()
        await asyncio.wait_for(relay.run(stop), 30)
        assert relay.status.published == 20
        assert pending_bytes(tmp_path / "spool" / "0") == 0


async def test_a_relay_stopped_with_nats_down_stops_promptly_and_keeps_the_spool(tmp_path: Path) -> None:
    await spooled(tmp_path / "spool", "down", 10)
    relay = Relay(tmp_path / "spool", f"nats://127.0.0.1:{procs.free_port()}", batch=512, publish_timeout_s=1.0,
                  duplicate_window_s=7200)
    stop = asyncio.Event()
    stop.set()
    started = time.monotonic()
    await asyncio.wait_for(relay.run(stop), 30)
    assert time.monotonic() - started < 5
    assert relay.status.published == 0
    assert pending_bytes(tmp_path / "spool" / "0") > 0  # for the next start


def test_sigterm_publishes_the_last_requests_events_before_the_gateway_exits(tmp_path: Path, fake_llm: FakeLLM) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        gw = start_gateway(tmp_path / "gw", catalog_for(fake_llm.port), APPLIANCE_NATS_URL=server.url)
        chats(gw.base_url, 25)
        assert procs.stop(gw.proc) == 0  # at once: some events are still in a worker's buffer
        assert stream_messages(server.url) == 50
        assert all(pending_bytes(d) == 0 for d in (gw.state_dir / "spool").iterdir() if d.is_dir())
