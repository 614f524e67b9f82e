"""`appliance inference` as systemd runs it: READY=1 once serving, STOPPING=1 and exit 0 on
SIGTERM; and the concurrency bound answered with RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from appliance.config import InferenceSettings, Settings
from appliance.inference.gen import inference_pb2 as pb
from appliance.inference.gen import inference_pb2_grpc as pb_grpc
from appliance.inference.local import LocalModels
from appliance.inference.service import InferenceServer
from tests import procs


def _messages(sock: socket.socket, until: str, timeout: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if any(until in m for m in got):
            break
    return got


@pytest.mark.slow
def test_sd_notify_ready_then_stopping_and_clean_exit(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(path))
    port, health = procs.free_port(), procs.free_port()
    env = procs.child_env(NOTIFY_SOCKET=str(path), APPLIANCE_KNOWLEDGE__EMBED_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "inference", "--listen", f"127.0.0.1:{port}",
                             "--health-listen", f"127.0.0.1:{health}"], env=env, cwd=procs.ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        ready = _messages(notify, "READY=1", 60)
        assert any("READY=1" in m for m in ready), ready
        procs.wait_port(port, proc, timeout=5)  # READY means listening already
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert any("STOPPING=1" in m for m in _messages(notify, "STOPPING=1", 5))
    finally:
        procs.stop(proc)
        notify.close()


async def test_calls_beyond_max_concurrency_get_resource_exhausted(local_models: LocalModels) -> None:
    settings = Settings(inference=InferenceSettings(listen="127.0.0.1:0", health_listen="127.0.0.1:0",
                                                    max_concurrency=1))
    server = InferenceServer(settings, local_models)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.EmbeddingServiceStub(channel)
            long_texts = ["a long passage about retrieval and reranking " * 20] * 64
            slow = asyncio.ensure_future(stub.Embed(pb.EmbedRequest(texts=long_texts)))
            await asyncio.sleep(0.2)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Embed(pb.EmbedRequest(texts=["quick"]))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert len((await slow).vectors) == 64 * 384 * 4
    finally:
        await server.stop(0)
