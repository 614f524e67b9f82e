"""The host's inference service as a child of `appliance serve`: models loaded once per host.

Each Granian worker would otherwise load its own ONNX embedder, most of a worker's memory
(docs/benchmarks.md, "Models once per host"). `serve` starts `appliance inference` before it forks the workers, on unix sockets
under the state dir (`inference/grpc.sock`, and `inference/http.sock` for its `/healthz`
and `/metrics`), and hands the workers `APPLIANCE_INFERENCE_URL=unix:...`: they call it
and hold no model, falling back in process per call while it cannot answer
(inference/wiring.py). Not when `inference.host_service` is false, nor when
APPLIANCE_INFERENCE_URL already names a service (the desktop's own unit, say).

`InferenceSupervisor` keeps one child running for the lifetime of `serve`:

- READY and liveness come over the sd_notify protocol the service speaks to systemd
  anyway: the child's NOTIFY_SOCKET is a datagram socket of ours, not the unit's (with the
  unit's, its READY=1 would pass for the gateway's). Not READY within
  `host_service_start_timeout_s`, or no WATCHDOG=1 for `host_service_watchdog_s`: killed.
- A child that exits or is killed is started again, after 1 s, doubling (to 60 s) while
  it keeps dying young; workers serve in process meanwhile.
- Stopping closes the child's stdin, after the workers are gone (it ignores SIGINT and
  SIGTERM, which reach the whole group while workers still drain), and kills it if it has
  not drained within `grace_s` + 5 s. A serve process that dies closes that stdin too,
  once its workers (which inherit the pipe) are gone as well.
- It admits as many calls at once as a worker's own executor queued
  (`knowledge.inference_queue_max`, when larger than `inference.max_concurrency`), and a
  worker answers 503 rather than falling back when it is full.

The health endpoint is a unix socket rather than a loopback port: nothing off the host
reads it (Prometheus scrapes the desktop's own `appliance-inference` unit), no port can be
taken by another `appliance inference` on the same host, and it has the state dir's
permissions. `curl --unix-socket STATE/inference/http.sock http://x/healthz` reads it.

Another model to load once per host (the semantic router's prompt encoder, say) needs no
change here: it is loaded by `appliance inference` (`inference/local.py`), gets an RPC in
`proto/inference.proto`, a method in `grpc_client.py`, and a lazy in-process side behind
`Fallback` (as `inference/lazy.py` does for the embedder), so workers keep holding none.

This module runs in the serve process before Granian forks: it imports neither grpc (whose
state does not survive a fork) nor onnxruntime.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from appliance import children
from appliance.config import Settings

log = logging.getLogger(__name__)

SUN_PATH_MAX: Final = 107          # sockaddr_un.sun_path is 108 bytes with its NUL
RESTART_DELAY_S: Final = 1.0
MAX_RESTART_DELAY_S: Final = 60.0
STABLE_S: Final = 60.0             # a child that ran this long resets the restart delay
POLL_S: Final = 0.5
# Not the child's: it answers to our notify socket, keeps its metrics in its own registry
# (served on its health socket), and is told its workers' URL by nobody.
_NOT_INHERITED: Final = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "PROMETHEUS_MULTIPROC_DIR",
                         "APPLIANCE_INFERENCE_URL")


@dataclass(frozen=True, slots=True)
class HostSockets:
    directory: Path
    private: bool                  # a temp dir of ours: the state dir's path is too long for a socket

    @property
    def grpc(self) -> Path:
        return self.directory / "grpc.sock"

    @property
    def http(self) -> Path:
        return self.directory / "http.sock"

    @property
    def notify(self) -> Path:
        return self.directory / "notify.sock"

    @property
    def url(self) -> str:
        return f"unix:{self.grpc}"

    def all(self) -> tuple[Path, ...]:
        return self.grpc, self.http, self.notify


def host_sockets(state_dir: Path) -> HostSockets:
    """`STATE/inference/`, or a private temp dir when those paths would not fit a socket."""
    directory = state_dir.expanduser().absolute() / "inference"
    if len(str(directory / "notify.sock").encode()) <= SUN_PATH_MAX:
        return HostSockets(directory, private=False)
    return HostSockets(Path(tempfile.mkdtemp(prefix="appliance-inference-")), private=True)


def wanted(settings: Settings) -> bool:
    """Whether `serve` runs its own inference service."""
    return settings.inference.host_service and not settings.inference_url


class InferenceSupervisor:
    """Keeps one `appliance inference` child on `sockets` running for the lifetime of `serve`."""

    def __init__(self, settings: Settings, sockets: HostSockets) -> None:
        self.settings = settings.inference
        # Workers queued up to inference_queue_max calls in their own executor; the service
        # admits as many, so a burst is queued there rather than refused at max_concurrency.
        self._max_concurrency = max(settings.inference.max_concurrency, settings.knowledge.inference_queue_max)
        self.sockets = sockets
        self.ready = threading.Event()   # the current child said READY=1
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._notify: socket.socket | None = None
        self._spawned_at = 0.0
        self._last_ping = 0.0
        self._thread = threading.Thread(target=self._watch, name="inference-supervisor", daemon=True)

    @property
    def url(self) -> str:
        return self.sockets.url

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def start(self) -> None:
        self.sockets.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.sockets.notify.unlink()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(self.sockets.notify))
        notify.settimeout(POLL_S)
        self._notify = notify
        self._spawn()
        self._thread.start()

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in children.environment().items() if k not in _NOT_INHERITED}
        env.update(NOTIFY_SOCKET=str(self.sockets.notify), APPLIANCE_INFERENCE__HOST_CHILD="true",
                   WATCHDOG_USEC=str(int(self.settings.host_service_watchdog_s * 1_000_000)),
                   APPLIANCE_INFERENCE__MAX_CONCURRENCY=str(self._max_concurrency))
        return env

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            for stale in (self.sockets.grpc, self.sockets.http):  # a killed child's
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            self.ready.clear()
            self._spawned_at = time.monotonic()
            self._proc = subprocess.Popen(
                children.command("inference", "--listen", f"unix:{self.sockets.grpc}",
                                 "--health-listen", f"unix:{self.sockets.http}"),
                env=self._child_env(), stdin=subprocess.PIPE)
        log.info("inference service starting", extra={"pid": self._proc.pid, "grpc": self.url})

    def _messages(self) -> None:
        """Read what the child said over sd_notify (waits up to POLL_S)."""
        assert self._notify is not None
        try:
            data = self._notify.recv(4096)
        except (TimeoutError, OSError):
            return
        now = time.monotonic()
        for line in data.decode(errors="replace").splitlines():
            if line == "READY=1" and not self.ready.is_set():
                self._last_ping = now
                self.ready.set()
                log.info("inference service ready", extra={"pid": self.pid,
                                                           "took_s": round(now - self._spawned_at, 3)})
            elif line == "WATCHDOG=1":
                self._last_ping = now

    def _hung(self) -> str | None:
        now = time.monotonic()
        if not self.ready.is_set():
            if now - self._spawned_at > self.settings.host_service_start_timeout_s:
                return f"not ready after {self.settings.host_service_start_timeout_s:g}s"
        elif now - self._last_ping > self.settings.host_service_watchdog_s:
            return f"no watchdog ping for {self.settings.host_service_watchdog_s:g}s"
        return None

    def _watch(self) -> None:
        delay = RESTART_DELAY_S
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            self._messages()
            code = proc.poll()
            if code is None:
                why = self._hung()
                if why is not None and not self._stopping.is_set():
                    log.error("inference service %s; killing it", why, extra={"pid": proc.pid})
                    proc.kill()
                continue
            if self._stopping.is_set():
                return
            if proc.stdin is not None:
                proc.stdin.close()
            ran = time.monotonic() - self._spawned_at
            delay = RESTART_DELAY_S if ran >= STABLE_S else delay
            log.error("inference service exited; restarting it (embeddings are served in process meanwhile)",
                      extra={"exit_code": code, "ran_s": round(ran, 1), "restart_in_s": delay})
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, MAX_RESTART_DELAY_S)
            self.restarts += 1
            self._spawn()

    def stop(self) -> None:
        """Close the child's stdin and wait for it to drain (bounded), then SIGKILL."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            timeout = self.settings.grace_s + 5
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("inference service did not stop in time; killed", extra={"pid": proc.pid})
                proc.kill()
                proc.wait()
        if self._thread.is_alive():
            self._thread.join(POLL_S * 5)
        if self._notify is not None:
            self._notify.close()
        if self.sockets.private:
            shutil.rmtree(self.sockets.directory, ignore_errors=True)
        else:
            for path in self.sockets.all():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def for_settings(settings: Settings) -> InferenceSupervisor | None:
    """The supervisor `serve` runs, or None when workers use their own models or a remote service."""
    if not wanted(settings):
        return None
    return InferenceSupervisor(settings, host_sockets(settings.state_dir))

