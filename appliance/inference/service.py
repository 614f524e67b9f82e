"""`appliance inference`: the gRPC service process, its health endpoints and lifecycle.

gRPC on `inference.listen` (EmbeddingService, RerankService, PromptEncoderService and
grpc.health.v1); HTTP `GET /healthz` and `GET /metrics` on `inference.health_listen`.
Bounded: at most `max_concurrency` RPCs in flight (more get RESOURCE_EXHAUSTED from gRPC),
messages up to `max_message_bytes`, and the models' executor queue. READY=1 is sent to
systemd once the models are loaded and both ports listen; WATCHDOG=1 while running.

Either address may be a unix socket (`unix:/path`), as when `serve` runs this service for
its workers (inference/host_service.py). That child runs with `inference.host_child`: it
stops when its stdin closes (the serve process closes it once its workers are gone, or
dies), and ignores SIGINT/SIGTERM, which a terminal's Ctrl-C or systemd's stop send to the
whole process group or cgroup while the workers still drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from appliance import systemd
from appliance.config import Settings
from appliance.inference.grpc_service import SERVICE_NAMES, PromptServicer, add_servicers
from appliance.inference.interceptor import MetricsInterceptor
from appliance.inference.local import LocalModels, load_local_models

log = logging.getLogger(__name__)


def split_hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def unix_path(address: str) -> str | None:
    """The path of a `unix:/path` (or `unix:///path`) address; None for host:port."""
    if not address.startswith("unix:"):
        return None
    path = address[len("unix:"):]
    return "/" + path.lstrip("/") if path.startswith("//") else path


def _where(address: str, port: int) -> str:
    return address if unix_path(address) else f"{split_hostport(address)[0]}:{port}"


class InferenceServer:
    """Start with `await start()`; `port` and `health_port` are the bound ports (useful with :0)."""

    def __init__(self, settings: Settings, models: LocalModels | None = None) -> None:
        self.settings = settings
        self.models = models
        self._owns_models = models is None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._runner: web.AppRunner | None = None
        self._prompts: PromptServicer | None = None
        self._preload: asyncio.Task[None] | None = None
        self.port = 0
        self.health_port = 0
        self.serving = False

    async def start(self) -> None:
        cfg = self.settings.inference
        if self.models is None:
            self.models = await asyncio.to_thread(load_local_models, self.settings.knowledge,
                                                    self.settings.models_dir)
        limit = cfg.max_message_bytes
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                     ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=cfg.max_concurrency, interceptors=[MetricsInterceptor()])
        self._prompts = add_servicers(server, self.models, cfg)
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
        if self.settings.catalog.routers:  # a router will ask at once: load it now, beside serving
            self._preload = asyncio.create_task(self._prompts.preload())
        log.info("inference service listening", extra={
            "grpc": _where(cfg.listen, self.port), "health": _where(cfg.health_listen, self.health_port),
            "model": self.models.embedder.model_id, "dimensions": self.models.embedder.dimensions,
            "max_concurrency": cfg.max_concurrency})

    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        address = self.settings.inference.health_listen
        self._runner = runner
        path = unix_path(address)
        if path is not None:
            await web.UnixSite(runner, path).start()
            return
        host, port = split_hostport(address)
        sock = socket.create_server((host, port), reuse_port=False)
        await web.SockSite(runner, sock).start()
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
        if self._preload is not None:
            self._preload.cancel()
        if self._prompts is not None:
            self._prompts.executor.close()
        if self._owns_models and self.models is not None:
            self.models.close()


async def run(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT; then drain for `grace_s` and exit 0."""
    server = InferenceServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    cfg = settings.inference
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _ignored if cfg.host_child else stop.set)
    if cfg.host_child:
        _stop_on_eof(loop, stop)
    systemd.notify_ready(f"serving on {_where(cfg.listen, server.port)}, "
                         f"health on {_where(cfg.health_listen, server.health_port)}")
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


def _ignored() -> None:
    log.debug("stop signal ignored: the serve process stops this service after its workers")


def _stop_on_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set `stop` when stdin reaches end of file: the parent closed it, or is gone."""
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            stop.set()

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)


def main(settings: Settings, listen: str | None = None, health_listen: str | None = None) -> int:
    """`appliance inference`: serve with the given listen addresses overriding settings."""
    from appliance import logs

    update = {k: v for k, v in (("listen", listen), ("health_listen", health_listen)) if v}
    if update:
        settings = settings.model_copy(update={"inference": settings.inference.model_copy(update=update)})
    logs.configure(settings.log_level)
    return asyncio.run(run(settings))
