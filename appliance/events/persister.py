"""`appliance persist`: the durable JetStream pull consumer that writes PIPELINE into PostgreSQL.

Each fetched batch is written in one transaction with `INSERT ... ON CONFLICT DO NOTHING`
and acknowledged only after the commit, so a crash between the two is a redelivery, and a
redelivery is a no-op. A message that cannot be stored (see `rows.SchemaError`) is retried
until its `max_deliveries`-th delivery, then set aside in `dead_letters` and acknowledged;
the others keep flowing. Lag (pending messages) is a gauge and is in `/readyz`.

A second durable consumer (`persister-usage`) reads the chat and embedding telemetry from
TELEMETRY into the usage tables (db/usage.py: raw rows and hourly rollups in one
transaction), the same way; every `usage.prune_interval_s` the usage tables are pruned to
their retention, and the event tables and stored Responses to theirs (`db.history`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import defaultdict
from typing import Any

import psycopg
from aiohttp import web
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from appliance import logs, systemd
from appliance.config import Settings
from appliance.db import history, usage
from appliance.events.rows import USAGE_SUBJECTS, Row, SchemaError, rows_for
from appliance.events.streams import connect, ensure_streams

log = logging.getLogger(__name__)

PERSISTED = Counter("appliance_persister_messages_total", "PIPELINE messages stored and acknowledged")
DEAD = Counter("appliance_persister_dead_letters_total", "Messages set aside in dead_letters")
LAG = Gauge("appliance_persister_lag_messages", "Messages in PIPELINE not yet delivered to the persister")
USAGE_LAG = Gauge("appliance_persister_usage_lag_messages",
                  "Chat and embedding telemetry in TELEMETRY not yet delivered to the usage consumer")
PRUNED = Counter("appliance_usage_pruned_rows_total", "Usage, history and stored-response rows deleted past "
                 "their retention", ["table"])
DURABLE = "persister"
USAGE_DURABLE = "persister-usage"


class Persister:
    def __init__(self, settings: Settings, database_url: str) -> None:
        self.settings = settings
        self.cfg = settings.events
        self.db_url = database_url
        self.stopping = asyncio.Event()
        self.lag: int | None = None
        self.usage_lag: int | None = None
        self.db_ok = False
        self.nats_ok = False
        self.persisted = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        status = await self._serve_status()
        try:
            nc = await self._connect()
            if nc is None:
                return
            js = nc.jetstream(timeout=5)
            await ensure_streams(js, self.cfg.duplicate_window_s)
            sub = await js.pull_subscribe("pipeline.>", durable=DURABLE, stream="PIPELINE", config=ConsumerConfig(
                durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT, ack_wait=30,
                max_ack_pending=self.cfg.persister_batch * 4))
            usage_sub = await js.pull_subscribe(USAGE_SUBJECTS[0], durable=USAGE_DURABLE, stream="TELEMETRY",
                                                config=ConsumerConfig(
                durable_name=USAGE_DURABLE, ack_policy=AckPolicy.EXPLICIT, ack_wait=30,
                max_ack_pending=self.cfg.persister_batch * 4, filter_subjects=list(USAGE_SUBJECTS)))
            async with await psycopg.AsyncConnection.connect(self.db_url, autocommit=True) as conn, \
                    await psycopg.AsyncConnection.connect(self.db_url, autocommit=True) as usage_conn:
                self.db_ok = True
                systemd.notify_ready("persisting PIPELINE")
                log.info("persister ready", extra={"batch": self.cfg.persister_batch})
                pruning = asyncio.create_task(self._prune_forever(), name="usage-prune")
                try:
                    await asyncio.gather(self._loop(sub, conn), self._loop(usage_sub, usage_conn, usage=True))
                finally:
                    pruning.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pruning
            # close, not drain: drain waits out its 30 s timeout on the pull subscription, and
            # whatever was fetched but not acked is redelivered to the next run anyway.
            await nc.close()
        finally:
            systemd.notify_stopping()
            await status.cleanup()
            log.info("persister stopped", extra={"persisted": self.persisted})

    async def _connect(self) -> Any:
        while not self.stopping.is_set():
            try:
                nc = await connect(self.settings.nats_url or "", name="appliance-persister", timeout_s=2)
                self.nats_ok = True
                return nc
            except Exception as exc:
                log.warning("NATS unavailable; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(1)
        return None

    async def _loop(self, sub: Any, conn: psycopg.AsyncConnection[Any], usage: bool = False) -> None:
        watchdog = systemd.watchdog_interval()
        last_ping = last_lag = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if watchdog and now - last_ping >= watchdog:
                systemd.notify_watchdog()
                last_ping = now
            if now - last_lag >= 2:
                with contextlib.suppress(Exception):
                    info = await sub.consumer_info()
                    if usage:
                        self.usage_lag = int(info.num_pending)
                        USAGE_LAG.set(self.usage_lag)
                    else:
                        self.lag = int(info.num_pending)
                        LAG.set(self.lag)
                last_lag = now
            try:
                msgs = await sub.fetch(self.cfg.persister_batch, timeout=1)
            except (TimeoutError, NatsTimeout):
                continue
            except NatsError as exc:  # NATS restarting (503, connection closed): wait it out
                self.nats_ok = False
                log.warning("NATS unavailable; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(1)
                continue
            self.nats_ok = True
            try:
                await self._store(conn, msgs)
                self.db_ok = True
            except psycopg.OperationalError as exc:
                self.db_ok = False
                log.warning("PostgreSQL unavailable; messages will be redelivered", extra={"error": repr(exc)})
                for m in msgs:
                    await m.nak(delay=2)
                await asyncio.sleep(1)
                conn = await self._reconnect(conn)

    async def _prune_forever(self) -> None:
        """Retention: usage rows and rollups, the event tables and stored Responses past their
        days, deleted now and then."""
        cfg, kept = self.settings.usage, self.settings.history
        while not self.stopping.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.db_url, autocommit=True) as conn:
                    raw, rolled = await usage.prune(conn, cfg.raw_retention_days, cfg.rollup_retention_days)
                    old = await history.prune(conn, kept.retention_days, kept.responses_retention_days)
                if raw or rolled:
                    PRUNED.labels("usage_events").inc(raw)
                    PRUNED.labels("usage_hourly").inc(rolled)
                    log.info("usage pruned", extra={"raw_rows": raw, "rollup_rows": rolled})
                if old:
                    for table, n in old.items():
                        PRUNED.labels(table).inc(n)
                    log.info("history pruned", extra={"rows": old})
            except psycopg.Error as exc:
                log.warning("pruning failed; trying again later", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), cfg.prune_interval_s)

    async def _reconnect(self, conn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncConnection[Any]:
        with contextlib.suppress(Exception):
            await conn.close()
        while not self.stopping.is_set():
            try:
                return await psycopg.AsyncConnection.connect(self.db_url, autocommit=True)
            except psycopg.OperationalError:
                await asyncio.sleep(1)
        return conn

    async def _store(self, conn: psycopg.AsyncConnection[Any], msgs: list[Any]) -> None:
        good: list[tuple[Any, list[tuple[str, Row]]]] = []
        for m in msgs:
            try:
                good.append((m, rows_for(m.subject, m.data)))
            except SchemaError as exc:
                await self._reject(conn, m, str(exc))
        if not good:
            return
        try:
            async with conn.transaction():
                await _insert(conn, [r for _, rows in good for r in rows])
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            # One bad row fails the batch: store them one by one to find it.
            for m, rows in good:
                try:
                    async with conn.transaction():
                        await _insert(conn, rows)
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    await self._reject(conn, m, f"database refused: {exc}")
                    good = [(g, r) for g, r in good if g is not m]
        for m, _ in good:
            await m.ack()
        self.persisted += len(good)
        PERSISTED.inc(len(good))

    async def _reject(self, conn: psycopg.AsyncConnection[Any], m: Any, error: str) -> None:
        deliveries = int(m.metadata.num_delivered)
        if deliveries < self.cfg.persister_max_deliveries:
            await m.nak(delay=1)
            return
        await conn.execute(
            "INSERT INTO dead_letters (stream_seq, subject, msg_id, data, error, deliveries)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (stream_seq) DO NOTHING",
            (m.metadata.sequence.stream, m.subject, (m.headers or {}).get("Nats-Msg-Id"), m.data, error, deliveries))
        await m.ack()
        DEAD.inc()
        log.error("message dead-lettered", extra={"subject": m.subject, "stream_seq": m.metadata.sequence.stream,
                                                  "error": error, "deliveries": deliveries})

    async def _serve_status(self) -> web.AppRunner:
        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def readyz(_: web.Request) -> web.Response:
            ok = self.nats_ok and self.db_ok
            return web.json_response({"status": "ready" if ok else "unavailable", "nats": self.nats_ok,
                                      "postgres": self.db_ok, "lag": self.lag, "usage_lag": self.usage_lag,
                                      "persisted": self.persisted},
                                     status=200 if ok else 503)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, _, port = self.cfg.persister_listen.rpartition(":")
        await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
        return runner


async def _insert(conn: psycopg.AsyncConnection[Any], rows: list[tuple[str, Row]]) -> None:
    by_table: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]] = defaultdict(list)
    usage_rows = []
    for table, row in rows:
        if table == "usage_events":
            usage_rows.append(row)
        else:
            by_table[(table, tuple(row))].append(tuple(row.values()))
    async with conn.cursor() as cur:
        if usage_rows:
            await usage.record(cur, usage_rows)
        for (table, columns), values in by_table.items():
            await cur.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
                " ON CONFLICT DO NOTHING", values)


def run(settings: Settings) -> int:
    logs.configure(settings.log_level)
    if not settings.nats_url:
        print("config error: APPLIANCE_NATS_URL: the persister needs NATS", flush=True)
        return 2
    from appliance.embedded.postgres import database_url

    url, server = database_url(settings)
    try:
        asyncio.run(Persister(settings, url).run())
    finally:
        if server is not None:
            server.stop()
    return 0
