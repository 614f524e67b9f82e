"""`appliance serve`: the Falcon app under Granian, with settings handed to the workers."""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil

from granian import Granian
from granian.constants import Interfaces, Loops

from appliance import logs, signals
from appliance.config import Settings
from appliance.events.relay_process import RelaySupervisor

log = logging.getLogger(__name__)


def worker_env(settings: Settings) -> dict[str, str]:
    """What a worker needs to rebuild the same settings: command-line overrides, and the
    catalog as validated here (JSON), so workers never re-read a file that may have changed
    and see what `appliance up` added to it."""
    env = {"APPLIANCE_HOST": settings.host, "APPLIANCE_PORT": str(settings.port),
           "APPLIANCE_WORKERS": str(settings.workers), "APPLIANCE_STATE_DIR": str(settings.state_dir),
           "APPLIANCE_CATALOG": settings.catalog.model_dump_json()}
    if settings.database_url:
        env["APPLIANCE_DATABASE_URL"] = settings.database_url
    if settings.nats_url:
        env["APPLIANCE_NATS_URL"] = settings.nats_url
    return env


def prepare_metrics(settings: Settings) -> None:
    """With several workers each counts on its own and /metrics sums them from files.

    Must run before anything in this process imports prometheus_client: it picks its value
    class at import, and the workers are forked from here (`appliance up` calls it first).
    """
    if settings.workers <= 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    metrics_dir = settings.state_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(settings: Settings) -> int:
    logs.configure(settings.log_level)
    os.environ.pop("APPLIANCE_CONFIG", None)
    os.environ.update(worker_env(settings))
    prepare_metrics(settings)
    log.info("starting gateway", extra={"host": settings.host, "port": settings.port, "workers": settings.workers,
                                        "catalog": str(settings.config) if settings.config else None})
    if not settings.catalog.api_keys and not is_loopback(settings.host):
        log.warning("serving on a non-loopback address with no API keys: anyone who can reach "
                    f"{settings.host}:{settings.port} can use every backend and the knowledge API; "
                    "add [[api_keys]] to the catalog, or bind to 127.0.0.1", extra={"host": settings.host})
    server = Granian(
        "appliance.asgi:create",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        log_enabled=False,
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=int(settings.drain_timeout_s) + 5,
    )
    signals.guard_forks(server)  # a SIGTERM to a worker not yet at appliance.asgi's hold()
    relay = RelaySupervisor(stop_timeout_s=settings.events.relay_drain_s + 5) if settings.events_on else None
    if relay is not None:
        relay.start()  # before the workers: they only write the spool, the relay publishes it
    try:
        server.serve()
    finally:
        if relay is not None:
            relay.stop()
    return 0
