"""Starting and stopping real processes for tests: the gateway, the fake LLM, anything on a port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {port} within {timeout}s")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: our checkout importable, no stray APPLIANCE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def spawn(args: list[str], port: int, *, env: dict[str, str] | None = None, log: Path | None = None,
          timeout: float = 30.0, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the child
    # Its own process group: what it forks (Granian workers, the relay) can be killed with it.
    proc = subprocess.Popen([sys.executable, *args], env=env or child_env(), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_port(port, proc, timeout)
    except Exception:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # A child that ignored the signal: kill its whole group, or a hung worker outlives
            # the test (SIGKILL on the main process alone left one serving for 40 minutes).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return int(proc.returncode)


def start_fake_llm(port: int | None = None, *, tokens: int = 8, delay_ms: float = 0.0,
                   models: str = "fake-model") -> tuple[subprocess.Popen[bytes], int]:
    port = port or free_port()
    proc = spawn(["-m", "tests.fake_llm", "--port", str(port), "--tokens", str(tokens),
                  "--delay-ms", str(delay_ms), "--models", models], port)
    return proc, port
