"""Models once per host: `serve` runs `appliance inference` beside its workers on a unix
socket, workers call it and hold no model, fall back in process while it is gone (and give
those models back once it answers again), and the child is restarted and stopped with serve."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import InferenceSettings, Settings
from appliance.domain.breaker import Breaker, State
from appliance.inference import host_service
from appliance.inference.fallback import Fallback, served_path
from appliance.inference.grpc_client import GrpcInference, RemoteUnavailable
from appliance.inference.local import LocalModels
from appliance.inference.service import InferenceServer
from appliance.inference.wiring import Inference
from appliance.server import worker_env
from tests import procs
from tests.conftest import Gateway, start_gateway

TEXTS = ["The cat sits on the mat.", "Quarterly revenue grew by five percent."]
WORKER_RSS_LIMIT_MB = 150


def _eventually(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


# --- where the sockets go, and when serve starts the service ---------------------------------


def test_sockets_live_under_the_state_dir_or_a_private_dir_when_that_path_is_too_long(tmp_path: Path) -> None:
    short = host_service.host_sockets(tmp_path / "state")
    assert short.directory == tmp_path / "state" / "inference" and not short.private
    assert short.url == f"unix:{tmp_path}/state/inference/grpc.sock"
    deep = host_service.host_sockets(tmp_path / ("d" * 120))
    try:
        assert deep.private and len(str(deep.notify)) <= host_service.SUN_PATH_MAX
        assert deep.directory.stat().st_mode & 0o777 == 0o700
    finally:
        deep.directory.rmdir()


def test_serve_runs_its_own_service_unless_a_url_is_set_or_the_setting_is_off(tmp_path: Path) -> None:
    assert host_service.wanted(Settings(state_dir=tmp_path))
    assert not host_service.wanted(Settings(state_dir=tmp_path, inference_url="desktop.home.arpa:50051"))
    assert not host_service.wanted(Settings(state_dir=tmp_path, inference=InferenceSettings(host_service=False)))
    sockets = host_service.host_sockets(tmp_path)
    assert worker_env(Settings(state_dir=tmp_path), sockets.url)["APPLIANCE_INFERENCE_URL"] == sockets.url
    assert "APPLIANCE_INFERENCE_URL" not in worker_env(Settings(state_dir=tmp_path))


# --- a worker's inference over the socket: waits at start, lazy fallback, release -------------


async def test_a_worker_waits_for_the_socket_holds_no_model_and_gives_back_a_fallback_model(
        tmp_path: Path, local_models: LocalModels) -> None:
    grpc_sock = tmp_path / "grpc.sock"

    def server(n: int) -> InferenceServer:
        listen = InferenceSettings(listen=f"unix:{grpc_sock}", health_listen=f"unix:{tmp_path}/http{n}.sock")
        return InferenceServer(Settings(inference=listen), local_models)

    inference = Inference(Settings(inference_url=f"unix:{grpc_sock}", inference=InferenceSettings(
        host_service_wait_s=20, host_service_cooldown_s=0.2, local_release_s=0.3)))
    first = server(1)

    async def late_start() -> None:
        await asyncio.sleep(0.5)  # the worker is up before the service
        await first.start()

    starting = asyncio.create_task(late_start())
    try:
        await inference.start()  # returns once the service answers
        assert first.serving
        await starting
        embedder, loader = inference.embedder, inference.loader
        vectors = await embedder.embed(TEXTS)
        assert served_path.get() == "grpc" and len(vectors[0]) == 384
        assert embedder.dimensions == 384 and await embedder.count_tokens(TEXTS) > 0
        assert embedder.tokenizer.encode("hello world", add_special_tokens=False).ids == [7592, 2088]
        assert not loader.loaded and loader.loads == 0  # nothing above needed the model
        assert (await inference.readiness())["service"] == "host"

        await first.stop(0)
        assert len(await embedder.embed(TEXTS)) == 2
        assert served_path.get() == "local" and loader.loaded and loader.loads == 1
        assert inference.breaker is not None and inference.breaker.state is not State.CLOSED

        second = server(2)
        await second.start()
        try:
            for _ in range(40):  # after the cool-down a probe goes through, once the channel has reconnected
                await asyncio.sleep(0.25)
                await embedder.embed(TEXTS)
                if served_path.get() == "grpc":
                    break
            assert served_path.get() == "grpc" and inference.breaker.state is State.CLOSED
            for _ in range(100):  # unused for local_release_s: released
                if not loader.loaded:
                    break
                await asyncio.sleep(0.05)
            assert not loader.loaded
            await embedder.embed(TEXTS)
            assert served_path.get() == "grpc" and loader.loads == 1
        finally:
            await second.stop(0)
    finally:
        starting.cancel()
        await inference.close()
        await first.stop(0)


async def test_a_worker_stops_waiting_after_host_service_wait_s(tmp_path: Path) -> None:
    inference = Inference(Settings(inference_url=f"unix:{tmp_path}/none.sock",
                                   inference=InferenceSettings(host_service_wait_s=0.5)))
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await inference.start()
        assert 0.4 <= loop.time() - started < 3
        assert len(await inference.embedder.embed(TEXTS)) == 2 and served_path.get() == "local"
    finally:
        await inference.close()


async def test_a_full_host_service_is_a_503_not_a_fallback() -> None:
    async def full() -> str:
        raise RemoteUnavailable("inference service: Embed failed: RESOURCE_EXHAUSTED", "overloaded")

    async def local() -> str:
        return "local"

    remote = GrpcInference("unix:/nowhere.sock", deadline_s=1, max_message_bytes=1 << 20)
    host = Fallback(remote, Breaker(30, name="host"), overload_falls_back=False)
    with pytest.raises(RemoteUnavailable):
        await host.call("embed", full, local)
    assert host.breaker.state is State.CLOSED  # it answered: not counted as down
    other = Fallback(remote, Breaker(30, name="remote"))
    assert await other.call("embed", full, local) == "local"


async def test_a_cancelled_probe_lets_the_next_call_probe() -> None:
    async def hang() -> str:
        await asyncio.sleep(30)
        return "grpc"

    async def local() -> str:
        return "local"

    breaker = Breaker(0.05, name="probe")
    breaker.failure()
    await asyncio.sleep(0.06)  # half-open: one probe may go
    fallback = Fallback(GrpcInference("unix:/nowhere.sock", deadline_s=1, max_message_bytes=1 << 20), breaker)
    probe = asyncio.create_task(fallback.call("embed", hang, local))
    await asyncio.sleep(0.02)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert breaker.allow()  # not stuck waiting for a verdict that never comes


# --- the service as serve's child --------------------------------------------------------------


@pytest.mark.slow
def test_the_child_ignores_stop_signals_and_stops_when_its_stdin_closes(tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(60)
    env = procs.child_env(NOTIFY_SOCKET=str(notify_path), APPLIANCE_INFERENCE__HOST_CHILD="true",
                          APPLIANCE_KNOWLEDGE__EMBED_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "inference", "--listen", f"unix:{tmp_path}/g.sock",
                             "--health-listen", f"unix:{tmp_path}/h.sock"], env=env, cwd=procs.ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        assert b"READY=1" in notify.recv(4096)
        for sig in (signal.SIGTERM, signal.SIGINT):  # what the whole group gets on a stop
            proc.send_signal(sig)
        time.sleep(1)
        assert proc.poll() is None
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(30) == 0
    finally:
        procs.stop(proc, signal.SIGKILL)
        notify.close()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _inference_child(gw: Gateway) -> int | None:
    return next((p for p in _children(gw.proc.pid) if "inference" in _cmdline(p)), None)


def _workers(gw: Gateway) -> list[int]:
    return [p for p in _children(gw.proc.pid) if _cmdline(p) == _cmdline(gw.proc.pid)]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _embed(gw: Gateway) -> tuple[int, str]:
    req = urllib.request.Request(f"{gw.base_url}/embeddings", method="POST",
                                 data=json.dumps({"model": "any", "input": "hello world"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert len(json.loads(resp.read())["data"][0]["embedding"]) == 384
        return resp.status, resp.headers["x-appliance-inference"]


def _inference_ready(gw: Gateway) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{gw.url}/readyz", timeout=10) as resp:
            return dict(json.loads(resp.read())["dependencies"]["inference"])
    except (OSError, urllib.error.HTTPError):
        return {}


@pytest.mark.slow
def test_serve_starts_the_service_workers_call_it_and_it_comes_back_when_killed(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, "", workers=1, APPLIANCE_KNOWLEDGE__EMBED_THREADS="1",
                       APPLIANCE_INFERENCE__LOCAL_RELEASE_S="1", APPLIANCE_INFERENCE__HOST_SERVICE_WATCHDOG_S="3")
    sockets = host_service.host_sockets(gw.state_dir)
    try:
        _eventually(lambda: _inference_ready(gw).get("grpc") == "SERVING", 60, "the service answers")
        child = _inference_child(gw)
        [worker] = _workers(gw)
        assert child is not None and sockets.grpc.is_socket()
        for _ in range(100):
            assert _embed(gw) == (200, "grpc")
        assert _inference_ready(gw)["local_loaded"] is False
        assert _rss_mb(worker) < WORKER_RSS_LIMIT_MB, _rss_mb(worker)

        os.kill(child, signal.SIGKILL)
        assert _embed(gw) == (200, "local")  # answered in process while the child is gone
        loaded_mb = _rss_mb(worker)
        restarted = _eventually(lambda: (p := _inference_child(gw)) != child and p, 30, "a new child")
        _eventually(lambda: _embed(gw)[1] == "grpc", 60, "calls reach the new child")
        # The model the fallback loaded is given back once unused for local_release_s (not
        # quite all of it: some heap and onnxruntime's code pages stay resident).
        _eventually(lambda: _inference_ready(gw).get("local_loaded") is False, 30, "released")
        _eventually(lambda: _rss_mb(worker) < loaded_mb - 100, 30, f"RSS below {loaded_mb - 100:.0f} MB")

        os.kill(restarted, signal.SIGSTOP)  # hung: no watchdog ping, killed and started again
        _eventually(lambda: (p := _inference_child(gw)) not in (None, restarted) and p, 30, "a hung child replaced")
        _eventually(lambda: _embed(gw)[1] == "grpc", 60, "calls reach the third child")
    finally:
        procs.stop(gw.proc)
    assert not _children(gw.proc.pid) and not any(p.exists() for p in sockets.all())
    said = [line.get("msg") for line in gw.log_lines()]
    assert "inference service ready" in said and "inference service exited; restarting it " \
        "(embeddings are served in process meanwhile)" in said


@pytest.mark.slow
@pytest.mark.parametrize("env", [{"APPLIANCE_INFERENCE__HOST_SERVICE": "false"},
                                 {"APPLIANCE_INFERENCE_URL": "grpc://127.0.0.1:1"}], ids=["off", "remote-url"])
def test_no_host_service_when_off_or_a_url_names_one(tmp_path: Path, env: dict[str, str]) -> None:
    gw = start_gateway(tmp_path, "", workers=1, APPLIANCE_KNOWLEDGE__EMBED_THREADS="1", **env)
    try:
        _eventually(lambda: _inference_ready(gw), 60, "ready")
        assert _embed(gw) == (200, "local")
        assert _inference_child(gw) is None and not (gw.state_dir / "inference").exists()
    finally:
        procs.stop(gw.proc)
