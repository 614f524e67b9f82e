"""A newcomer's first minute: `appliance up` to the first chat answer from the local model.

    python tests/perf/first_answer.py [--timeout 180] [--install-s SECONDS]

Starts `python -m appliance up` on a free port with a fresh state directory (so PostgreSQL
is initialised and migrated from nothing, as on a new machine), sends the README's chat
request every 100 ms until the local model answers, then stops it with SIGINT (Ctrl-C).
Prints when `up` said it was ready and when the first answer came, both from the moment
`up` was started; with --install-s (what .ci/run measured for its install) also the sum, the
README's "fresh clone to first answer". Exit 1 when no answer came within --timeout, or
when the local LLM is not installed (the line `up` printed says why).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m"
# Log events of `up`'s children, printed with their times beside the `appliance up:` lines:
# where the start's seconds go (the ONNX models, the worker's imports, the model's load).
STEPS = ("embedded postgresql ready", "local LLM ready", "inference service ready", "gateway ready")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ask(port: int) -> str | None:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}],
                       "max_tokens": 16}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            content = json.loads(resp.read())["choices"][0]["message"]["content"]
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return str(content) if content else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--install-s", type=float, default=None)
    args = ap.parse_args()
    port = _free_port()
    lines: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory(prefix="first-answer-") as state:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env.update(APPLIANCE_STATE_DIR=state, PYTHONUNBUFFERED="1")
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "up", "--port", str(port)], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        assert proc.stdout is not None
        out = proc.stdout

        def read() -> None:
            for raw in out:
                lines.append((time.monotonic() - t0, raw.decode(errors="replace").rstrip()))
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        answer, answered_s = None, None
        try:
            while time.monotonic() - t0 < args.timeout and proc.poll() is None:
                answer = _ask(port)
                if answer is not None:
                    answered_s = time.monotonic() - t0
                    break
                if any("local LLM not installed" in text or "local LLM failed" in text for _, text in lines):
                    break
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(5)
    said = [(t, text) for t, text in lines if text.startswith("appliance up:")]
    ready = next((t for t, text in said if " ready in " in text), None)
    llm = next((text for _, text in said if "local LLM" in text), "appliance up: (no local LLM line)")
    for t, text in said:
        print(f"{t:6.1f} s  {text}")
    for step in STEPS:
        seen = next((t for t, text in lines if f'"msg":"{step}"' in text), None)
        print(f"{seen:6.1f} s  (log) {step}" if seen is not None else f"     -    (log) {step}: not seen")
    print(llm)
    print("| step | seconds |")
    print("|---|---|")
    if args.install_s is not None:
        print(f"| install (.ci/run) | {args.install_s:.1f} |")
    print(f"| `appliance up` -> it printed ready | {ready:.1f} |" if ready is not None
          else "| `appliance up` -> it printed ready | never |")
    if answered_s is None:
        print("| `appliance up` -> first answer | none |")
        for _, text in lines[-20:]:
            print(f"  {text}")
        return 1
    print(f"| `appliance up` -> first answer | {answered_s:.1f} |")
    if args.install_s is not None:
        print(f"| install + up -> first answer | {args.install_s + answered_s:.1f} |")
    print(f"first answer: {answer!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
