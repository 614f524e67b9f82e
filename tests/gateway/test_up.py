"""`appliance up`: the newcomer's first command starts everything and Ctrl-C stops it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests import procs


def test_up_starts_postgres_and_the_gateway_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    port = procs.free_port()
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "up", "--port", str(port)], cwd=procs.ROOT,
                                env=procs.child_env(APPLIANCE_STATE_DIR=str(tmp_path / "state")),
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            procs.wait_port(port, proc, timeout=120)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as resp:
                ready = json.loads(resp.read())
            assert resp.status == 200 and ready["status"] == "ready"
            pid_file = tmp_path / "state" / "postgres" / "postmaster.pid"
            assert pid_file.exists()
            assert ready["dependencies"]["postgres"]["ok"] is True
            # Models once per host: `serve` runs the inference service, its worker holds none.
            inference = ready["dependencies"]["inference"]
            assert inference["service"] == "host" and inference["grpc"] == "SERVING"
            assert inference["local_loaded"] is False
            # A chat's events travel NATS -> persister -> PostgreSQL.
            wait = time.monotonic() + 30
            while not ready["dependencies"]["nats"]["ok"] and time.monotonic() < wait:
                time.sleep(0.2)
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as resp:
                    ready = json.loads(resp.read())
            assert ready["dependencies"]["nats"]["ok"] is True
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 0
        finally:
            procs.stop(proc)
    text = log.read_text()
    said = [line for line in text.splitlines() if line.startswith("appliance up:")]
    assert any("postgresql  embedded" in line for line in said)
    assert any("nats        embedded JetStream" in line for line in said)
    assert any(line.startswith("appliance up: persister") for line in said)
    assert any(f"gateway     http://127.0.0.1:{port}/v1" in line for line in said)
    # With the optional local LLM installed it joins the catalog; without, one line says how.
    assert any("smollm2-135m" in line or "pip install" in line for line in said)
    assert said[-1] == "appliance up: stopped"
    assert not pid_file.exists()  # PostgreSQL was stopped too
