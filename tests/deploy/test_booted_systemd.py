"""End to end under a booted systemd: install the desktop role with install.sh into a Debian
container, start its target, and watch the hardened units work.

The container is a debootstrapped bookworm tree (cached in /var/cache/appliance-test, built
when absent: about 70 s and 300 MB) booted by systemd-nspawn with a private network and a
throw-away overlay, so the cached tree is never changed. The artifact comes from the same
cached build as test_artifact.py and runs with the container's own /usr/bin/python3.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

CACHE = Path("/var/cache/appliance-test")
TREE = CACHE / "bookworm"
PACKAGES = "systemd,systemd-sysv,dbus,python3,curl,libnss-systemd"


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn, nsenter)"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        if not shutil.which(tool):
            return f"{tool} is not installed (Debian packages debootstrap, systemd-container, util-linux)"
    return None


def _build_tree() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / "bookworm.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    proc = subprocess.run(["nice", "-n", "10", "debootstrap", "--variant=minbase", f"--include={PACKAGES}",
                           "bookworm", str(tmp), "http://deb.debian.org/debian"],
                          capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"debootstrap failed (no Debian mirror?): {proc.stderr[-500:]}")
    tmp.rename(TREE)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo += children.get(p, [])
    return out


class Container:
    def __init__(self, proc: subprocess.Popen[bytes], init_pid: int) -> None:
        self.proc = proc
        self.init_pid = init_pid

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run(["nsenter", "-t", str(self.init_pid), "-a", "sh", "-c", script],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{script!r} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, unit: str, prop: str, value: str, timeout: float = 60) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.show(unit, prop, "ActiveState", "Result", "NRestarts")
            if state.get(prop) == value or time.monotonic() > deadline:
                return state
            time.sleep(0.5)


@pytest.fixture(scope="module")
def container(artifact: Path) -> Iterator[Container]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    if not (TREE / "usr/bin/python3").exists():
        _build_tree()
    name = f"appliance-test-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        ["systemd-nspawn", "-D", str(TREE), "--register=no", "--keep-unit", "-b", "--private-network",
         "--volatile=overlay", "-M", name, f"--bind-ro={REPO}:/src", f"--bind-ro={artifact}:/artifact/appliance"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        init_pid = 0
        deadline = time.monotonic() + 30
        while not init_pid and time.monotonic() < deadline:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.skip(f"systemd-nspawn cannot boot a container here: {out[-500:]}")
            for pid in _descendants(proc.pid)[1:]:
                try:
                    with open(f"/proc/{pid}/comm") as f:
                        if f.read().strip() == "systemd":
                            init_pid = pid
                            break
                except OSError:
                    continue
            time.sleep(0.2)
        assert init_pid, "the container's systemd never started"
        box = Container(proc, init_pid)
        state = box.sh("systemctl is-system-running --wait", check=False, timeout=120).strip()
        assert state in ("running", "degraded"), state
        yield box
    finally:
        if proc.poll() is None:
            try:
                os.kill(init_pid, signal.SIGRTMIN + 4)  # systemd: poweroff
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, UnboundLocalError):
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def desktop(container: Container) -> Container:
    out = container.sh("sh /src/install.sh --role desktop --artifact /artifact/appliance")
    assert "appliance (desktop): installed" in out
    # This container is alone: no NATS or PostgreSQL to reach, inference on this host.
    container.sh("sed -i -e '/^APPLIANCE_DATABASE_URL=/d' -e '/^APPLIANCE_NATS_URL=/d'"
                 " -e 's/^APPLIANCE_INFERENCE_URL=.*/APPLIANCE_INFERENCE_URL=127.0.0.1:50051/'"
                 " /etc/appliance/appliance.env")
    container.sh("umask 077; echo test-vllm-key > /etc/credstore/vllm-api-key")
    started = time.monotonic()
    container.sh("systemctl start appliance-desktop.target", timeout=180)
    print(f"appliance-desktop.target started in {time.monotonic() - started:.1f} s")
    return container


def test_target_is_enabled_by_install(desktop: Container) -> None:
    assert desktop.sh("systemctl is-enabled appliance-desktop.target").strip() == "enabled"


def test_gateway_and_inference_are_active_with_watchdog(desktop: Container) -> None:
    for unit in ("appliance-gateway", "appliance-inference"):
        state = desktop.show(unit, "ActiveState", "SubState", "WatchdogUSec", "NRestarts", "User")
        assert state["ActiveState"] == "active", (unit, state)
        assert state["WatchdogUSec"] == "30s", (unit, state)
        assert state["NRestarts"] == "0", (unit, state)
        assert state["User"] == "appliance"


def test_healthz_answers_inside_the_container(desktop: Container) -> None:
    assert desktop.sh("curl -sf localhost:8080/healthz") == '{"status":"ok"}'
    assert '"status": "ok"' in desktop.sh("curl -sf localhost:50052/healthz")


def test_embeddings_run_through_the_hardened_inference_service(desktop: Container) -> None:
    """onnxruntime under MemoryDenyWriteExecute=, the syscall filter and PrivateUsers=, over gRPC."""
    body = desktop.sh("curl -sS -D /tmp/headers -H 'content-type: application/json' localhost:8080/v1/embeddings"
                      " -d '{\"model\": \"all-MiniLM-L6-v2\", \"input\": [\"systemd runs this\"]}'")
    headers = desktop.sh("cat /tmp/headers")

    assert " 200 " in headers.splitlines()[0], headers + body
    assert "x-appliance-inference: grpc" in headers.lower(), headers
    assert len(json.loads(body)["data"][0]["embedding"]) == 384


def test_credentials_and_cache_directories(desktop: Container) -> None:
    pid = desktop.show("appliance-gateway", "MainPID")["MainPID"]
    creds = desktop.sh(f"cat /proc/{pid}/environ | tr '\\0' '\\n' | grep -E '^(CREDENTIALS_DIRECTORY|SHIV_ROOT|PGPASSFILE)='")
    assert "SHIV_ROOT=/var/cache/appliance" in creds
    directory = next(line.split("=", 1)[1] for line in creds.splitlines() if line.startswith("CREDENTIALS_DIRECTORY="))
    assert desktop.sh(f"cat {directory}/vllm-api-key").strip() == "test-vllm-key"
    # A credential without a file (openai-api-key) is skipped, not fatal.
    assert desktop.sh(f"ls {directory}").split() == ["vllm-api-key"]
    assert desktop.sh("ls /var/cache/appliance").startswith("appliance_")
    assert desktop.sh("stat -c %U /var/lib/appliance").strip() == "appliance"


def test_watchdog_pings_keep_the_gateway_alive(desktop: Container) -> None:
    """With a 3 s watchdog the gateway is killed within seconds unless its workers ping."""
    desktop.sh("mkdir -p /run/systemd/system/appliance-gateway.service.d && printf '[Service]\\nWatchdogSec=3\\n'"
               " > /run/systemd/system/appliance-gateway.service.d/test-watchdog.conf && systemctl daemon-reload"
               " && systemctl restart appliance-gateway")
    try:
        time.sleep(10)
        state = desktop.show("appliance-gateway", "ActiveState", "WatchdogUSec", "NRestarts", "Result")
        assert state == {"ActiveState": "active", "WatchdogUSec": "3s", "NRestarts": "0", "Result": "success"}, state
    finally:
        desktop.sh("rm -r /run/systemd/system/appliance-gateway.service.d && systemctl daemon-reload"
                   " && systemctl restart appliance-gateway")


def test_clean_stop_and_the_journal(desktop: Container) -> None:
    desktop.sh("systemctl stop appliance-desktop.target")

    for unit in ("appliance-gateway", "appliance-inference"):
        state = desktop.wait_for(unit, "ActiveState", "inactive")
        assert state["ActiveState"] == "inactive" and state["Result"] == "success", (unit, state)
    log = desktop.sh("journalctl -u appliance-gateway --no-pager -o cat")
    assert '"msg":"starting gateway"' in log
    assert '"msg":"gateway ready"' in log
    assert '"msg":"gateway stopped"' in log
    assert "Deactivated successfully" in desktop.sh("journalctl -u appliance-gateway --no-pager")


def test_uninstall_inside_the_container(desktop: Container) -> None:
    out = desktop.sh("sh /src/install.sh --uninstall")

    assert "keeping /etc/appliance/appliance.env" in out
    assert desktop.sh("systemctl list-unit-files 'appliance-*' --no-legend", check=False).strip() == ""
    assert desktop.sh("ls /opt 2>/dev/null || true").strip() == ""
