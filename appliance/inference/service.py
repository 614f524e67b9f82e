"""`appliance inference`: the gRPC service process, its health endpoints and lifecycle.

gRPC on `inference.listen` (EmbeddingService, RerankService and
grpc.health.v1); HTTP `GET /healthz` and `GET /metrics` on `inference.health_listen`.
Bounded: at most `max_concurrency` RPCs in flight (more get RESOURCE_EXHAUSTED from gRPC),
messages up to `max_message_bytes`, and the models' executor queue. READY=1 is sent to
systemd once the models are loaded and both ports listen; WATCHDOG=1 while running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from appliance import systemd
from appliance.config import Settings
from appliance.inference.grpc_service import SERVICE_NAMES, add_servicers
from appliance.inference.interceptor import MetricsInterceptor
from appliance.inference.local import LocalModels, load_local_models

log = logging.getLogger(__name__)


def split_hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class InferenceServer:
    """Start with `await start()`; `port` and `health_port` are the bound ports (useful with :0)."""

    def __init__(self, settings: Settings, models: LocalModels | None = None) -> None:
        self.settings = settings
        self.models = models
        self._owns_models = models is None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.health_port = 0
        self.serving = False

    async def start(self) -> None:
        cfg = self.settings.inference
        if self.models is None:
            self.models = await asyncio.to_thread(load_local_models, self.settings.knowledge)
        limit = cfg.max_message_bytes
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                     ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=cfg.max_concurrency, interceptors=[MetricsInterceptor()])
        add_servicers(server, self.models, cfg)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self.port = server.add_insecure_port(cfg.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {cfg.listen}")
        await server.start()
        self._server = server
        await self._start_http()
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.serving = True
        log.info("inference service listening", extra={
            "grpc": f"{split_hostport(cfg.listen)[0]}:{self.port}", "health_port": self.health_port,
            "model": self.models.embedder.model_id, "dimensions": self.models.embedder.dimensions,
            "max_concurrency": cfg.max_concurrency})

    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = split_hostport(self.settings.inference.health_listen)
        sock = socket.create_server((host, port), reuse_port=False)
        await web.SockSite(runner, sock).start()
        self._runner = runner
        self.health_port = int(sock.getsockname()[1])

    async def _healthz(self, request: web.Request) -> web.Response:
        status = 200 if self.serving else 503
        return web.json_response({"status": "ok" if self.serving else "stopping", "grpc_port": self.port},
                                 status=status)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop(self, grace: float | None = None) -> None:
        self.serving = False
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.settings.inference.grace_s if grace is None else grace)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._owns_models and self.models is not None:
            self.models.close()


async def run(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT; then drain for `grace_s` and exit 0."""
    server = InferenceServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    systemd.notify_ready(f"serving on :{server.port}, health on :{server.health_port}")
    interval = systemd.watchdog_interval()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval or 3600)
            if interval:
                systemd.notify_watchdog()
    finally:
        systemd.notify_stopping()
        log.info("inference service stopping")
        await server.stop()
    return 0


def main(settings: Settings, listen: str | None = None, health_listen: str | None = None) -> int:
    """`appliance inference`: serve with the given listen addresses overriding settings."""
    from appliance import logs

    update = {k: v for k, v in (("listen", listen), ("health_listen", health_listen)) if v}
    if update:
        settings = settings.model_copy(update={"inference": settings.inference.model_copy(update=update)})
    logs.configure(settings.log_level)
    return asyncio.run(run(settings))
