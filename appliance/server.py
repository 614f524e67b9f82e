"""`appliance serve`: the Falcon app under Granian, with settings handed to the workers, and
the children beside them: the event relay and the host's inference service."""

from __future__ import annotations

import logging
import os
import shutil

from granian import Granian
from granian.constants import Interfaces, Loops
from granian.http import HTTP1Settings, HTTP2Settings

from appliance import logs, signals
from appliance.config import Settings, write_catalog_snapshot
from appliance.events.relay_process import RelaySupervisor
from appliance.inference import host_service

log = logging.getLogger(__name__)


def worker_env(settings: Settings, inference_url: str | None = None) -> dict[str, str]:
    """What a worker needs to rebuild the same settings: command-line overrides, and the
    catalog as validated here (a JSON file under the state dir), so workers never re-read a
    file that may have changed and see what `appliance up` added to it; `inference_url`, the
    host service's socket."""
    env = {"APPLIANCE_HOST": settings.host, "APPLIANCE_PORT": str(settings.port),
           "APPLIANCE_WORKERS": str(settings.workers), "APPLIANCE_STATE_DIR": str(settings.state_dir),
           "APPLIANCE_CATALOG_FILE": str(write_catalog_snapshot(settings))}
    if settings.database_url:
        env["APPLIANCE_DATABASE_URL"] = settings.database_url
    if settings.nats_url:
        env["APPLIANCE_NATS_URL"] = settings.nats_url
    if inference_url:
        env["APPLIANCE_INFERENCE_URL"] = inference_url
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


def serve(settings: Settings) -> int:
    logs.configure(settings.log_level)
    prepare_metrics(settings)
    # Imported after prepare_metrics: the access store's metrics import prometheus_client.
    from appliance.access.wiring import check_exposure, is_loopback

    check_exposure(settings, is_loopback(settings.host))  # no keys anywhere: refused, unless allowed
    os.environ.pop("APPLIANCE_CONFIG", None)
    # Models once per host: the workers call this child instead of loading their own.
    inference = host_service.for_settings(settings)
    os.environ.update(worker_env(settings, inference.url if inference is not None else None))
    log.info("starting gateway", extra={"host": settings.host, "port": settings.port, "workers": settings.workers,
                                        "catalog": str(settings.config) if settings.config else None})
    if not settings.catalog.api_keys and not is_loopback(settings.host) and not settings.database_url:
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
        # Granian's defaults: a 408 KiB head on HTTP/1, a 16 MiB header list on HTTP/2.
        http1_settings=HTTP1Settings(max_buffer_size=settings.max_header_bytes),
        http2_settings=HTTP2Settings(max_headers_size=settings.max_header_bytes,
                                     max_send_buffer_size=settings.max_header_bytes),
    )
    signals.guard_forks(server)  # a SIGTERM to a worker not yet at appliance.asgi's hold()
    relay = RelaySupervisor(stop_timeout_s=settings.events.relay_drain_s + 5) if settings.events_on else None
    # Both before the workers fork: the workers only write the spool, the relay publishes it;
    # a starting worker waits for the inference service (host_service_wait_s), not we for it.
    if inference is not None:
        inference.start()
    try:
        if relay is not None:
            relay.start()
        server.serve()
    finally:
        if relay is not None:
            relay.stop()
        if inference is not None:
            inference.stop()  # after the workers: they call it until they have drained
    return 0
