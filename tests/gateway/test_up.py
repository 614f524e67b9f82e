"""`appliance up`: the newcomer's first command starts everything and Ctrl-C stops it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai

from appliance.embedded.local_llm import MODEL_ID, availability
from tests import procs

LOCAL_LLM = availability()


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
            # Models once per host: `up` runs the inference service, its worker holds none. The
            # worker serves without waiting for it, so it may still be loading its models.
            wait = time.monotonic() + 60
            while ready["dependencies"]["inference"].get("grpc") != "SERVING" and time.monotonic() < wait:
                time.sleep(0.2)
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as resp:
                    ready = json.loads(resp.read())
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
            if LOCAL_LLM.ok:   # CI installs it: the README's first command, through the gateway
                client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
                stream = client.chat.completions.create(
                    model=MODEL_ID, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, stream=True)
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip()
            wait = time.monotonic() + 30   # the ready lines come from a thread polling /readyz
            while "try it:" not in log.read_text() and time.monotonic() < wait:
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 0
        finally:
            procs.stop(proc)
    text = log.read_text()
    said = [line for line in text.splitlines() if line.startswith("appliance up:")]
    assert any("postgresql  embedded" in line for line in said)
    # The inference service is launched before PostgreSQL, so its models load during initdb
    # (and `serve` reuses it: the readyz above said service "host", SERVING).
    starts = [line.split()[2] for line in said]
    assert starts.index("inference") < starts.index("postgresql")
    assert any("nats        embedded JetStream" in line for line in said)
    assert any(line.startswith("appliance up: persister") for line in said)
    assert any(f"gateway     http://127.0.0.1:{port}/v1" in line for line in said)
    # With the optional local LLM installed it joins the catalog, saying which build runs it;
    # without, one line says how to add it.
    if LOCAL_LLM.ok:
        assert any(line.startswith(f"appliance up: local LLM   model {MODEL_ID} at http://127.0.0.1:")
                   and "on the CPU" in line for line in said)
    else:
        assert any("pip install 'appliance[local-llm]'" in line for line in said)
    # Once ready: the API base, the web UI when this install has it, one request to paste.
    assert any(line.startswith("appliance up: ready in ") for line in said)
    assert f"appliance up:   API base  http://127.0.0.1:{port}/v1  (any OpenAI client" in text
    ui = (procs.ROOT / "appliance" / "ui" / "index.html").is_file()
    assert (f"appliance up:   web UI    http://127.0.0.1:{port}/ui/" in text) is ui
    curl = next(line for line in text.splitlines() if line.startswith("curl "))
    assert f"http://127.0.0.1:{port}/v1/" in curl
    if LOCAL_LLM.ok:
        assert f'"model": "{MODEL_ID}"' in curl and "Content-Type: application/json" in curl
    assert said[-1] == "appliance up: stopped"
    assert not pid_file.exists()  # PostgreSQL was stopped too
