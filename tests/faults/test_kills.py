"""SIGKILL under load: the gateway's whole process group, one Granian worker, the relay, the
persister. What was killed comes back (started again by the test, replaced by Granian or by
`appliance serve`), and every chat a client had the whole answer to has its events in
JetStream (and, through the persister, in PostgreSQL), each exactly once.

An answer is whole when the client read all of it: a JSON body to its Content-Length, a
stream to the chunked terminator. The recorder writes an outcome to the spool file before
that (events/recorder.py), so no kill of a process can take an answered request's events.
Results are printed (`-s`) as docs/faults.md's table has them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.embedded.nats import EmbeddedNats
from appliance.events.spool import pending_bytes
from appliance.events.spool_root import read_status, slot_dirs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway
from tests.events.conftest import PersisterProc
from tests.faults.load import (
    Load,
    Tally,
    connections,
    jetstream_chats,
    postgres_chats,
    tally,
    wait_until,
    workers,
)

LOAD_S = 1.0  # load before and after each kill
# No chat here needs the host's inference service, and a gateway without it starts in half the time.
HOST_SERVICE = "false"


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(fake_llm: FakeLLM, nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Two workers (two spool slots), events on: the kills of a worker, the relay and the persister share it."""
    gw = start_gateway(tmp_path_factory.mktemp("gw"), catalog_for(fake_llm.port), workers=2,
                       APPLIANCE_NATS_URL=nats_server.url, APPLIANCE_INFERENCE__HOST_SERVICE=HOST_SERVICE)
    try:
        wait_until(lambda: relay_connected(gw), 20, "the relay connected")
        yield gw
    finally:
        kill_group(gw)


def kill_group(gw: Gateway) -> None:
    """SIGKILL `appliance serve` and every process it started (its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(gw.proc.pid, signal.SIGKILL)
    gw.proc.wait(10)


def relay_connected(gw: Gateway) -> bool:
    return bool((read_status(gw.state_dir / "spool") or {}).get("connected"))


def drained(gw: Gateway) -> None:
    """Until the relay has published every spooled record (its cursors at the spool's end)."""
    root = gw.state_dir / "spool"
    wait_until(lambda: relay_connected(gw) and all(pending_bytes(d) == 0 for d in slot_dirs(root)), 30,
               "the spool drained into JetStream")


def under_load(load: Load) -> None:
    start = time.monotonic()
    time.sleep(LOAD_S)
    assert load.answered_since(start) > 0, f"no answers ({load.errors} errors)"


def report(case: str, result: Tally, load: Load) -> None:
    print(f"\n[faults] {case}: {result.row()}; sent {load.sent}, connection errors {load.errors}")
    assert not result.lost, f"{len(result.lost)} answered requests lost their events: {result.lost[:10]}"
    assert not result.duplicated, f"events stored twice: {result.duplicated[:10]}"


def prefix(case: str) -> str:
    return f"{case}-{uuid.uuid4().hex[:8]}"


def test_sigkill_of_the_gateways_process_group_twice(tmp_path: Path, fake_llm: FakeLLM) -> None:
    ids = prefix("kill-group")
    catalog = catalog_for(fake_llm.port)
    with EmbeddedNats(tmp_path / "nats") as server:
        gw = start_gateway(tmp_path / "gw", catalog, APPLIANCE_NATS_URL=server.url,
                           APPLIANCE_INFERENCE__HOST_SERVICE=HOST_SERVICE)
        try:
            with Load(gw.port, ids) as load:
                for _ in range(2):
                    under_load(load)
                    kill_group(gw)  # main, worker and relay at once
                    gw = start_gateway(tmp_path / "gw", catalog, APPLIANCE_NATS_URL=server.url,  # same state dir
                                       APPLIANCE_INFERENCE__HOST_SERVICE=HOST_SERVICE)
                    load.port = gw.port
                under_load(load)
            drained(gw)
            result = tally(load.ids(), jetstream_chats(server.url, ids), ids)
        finally:
            kill_group(gw)
    report("gateway process group SIGKILLed twice", result, load)


def test_sigkill_of_one_worker(gateway: Gateway, nats_server: EmbeddedNats) -> None:
    ids = prefix("kill-worker")
    before = workers(gateway.proc.pid)
    assert len(before) == 2
    with Load(gateway.port, ids) as load:
        under_load(load)
        victim = max(before, key=lambda pid: connections(pid, gateway.port))  # the one answering our clients
        assert connections(victim, gateway.port) > 0
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: len(set(workers(gateway.proc.pid)) - set(before)) == 1, 15, "Granian replaced the worker")
        under_load(load)
        assert load.answered_since(killed) > 0
    drained(gateway)
    report("one Granian worker SIGKILLed", tally(load.ids(), jetstream_chats(nats_server.url, ids), ids), load)


def test_sigkill_of_the_relay(gateway: Gateway, nats_server: EmbeddedNats) -> None:
    ids = prefix("kill-relay")
    relay = (read_status(gateway.state_dir / "spool") or {}).get("pid")
    assert isinstance(relay, int)
    with Load(gateway.port, ids) as load:
        under_load(load)
        os.kill(relay, signal.SIGKILL)  # its cursor was saved up to a second ago: it publishes that again
        wait_until(lambda: (read_status(gateway.state_dir / "spool") or {}).get("pid") not in (None, relay), 15,
                   "appliance serve restarted the relay")
        under_load(load)
    drained(gateway)
    report("the relay SIGKILLed", tally(load.ids(), jetstream_chats(nats_server.url, ids), ids), load)


def test_sigkill_of_the_persister(gateway: Gateway, nats_server: EmbeddedNats, migrated_pg: str,
                                  tmp_path: Path) -> None:
    ids = prefix("kill-persister")
    persisters = [PersisterProc(nats_server.url, migrated_pg, tmp_path / f"persister-{n}.log") for n in range(2)]
    try:
        persisters[0].start()
        with Load(gateway.port, ids) as load:
            under_load(load)
            persisters[0].proc.send_signal(signal.SIGKILL)  # mid-batch: committed, maybe not acknowledged
            persisters[0].proc.wait(10)
            persisters[1].start()
            under_load(load)
        answered = load.ids()
        # A batch the killed persister had fetched and not acknowledged comes again after the
        # consumer's ack_wait (30 s, events/persister.py).
        wait_until(lambda: answered <= set(postgres_chats(migrated_pg, ids)[0]), 45, "the persister stored every answer")
        drained(gateway)
        time.sleep(0.5)  # a redelivery that would duplicate a row lands now
        in_db = tally(answered, postgres_chats(migrated_pg, ids), ids)
        in_jetstream = tally(answered, jetstream_chats(nats_server.url, ids), ids)
    finally:
        for p in persisters:
            p.stop()
    report("the persister SIGKILLed (JetStream)", in_jetstream, load)
    report("the persister SIGKILLed (PostgreSQL chat_history)", in_db, load)
