"""A booted Debian container for the end-to-end tests: systemd-nspawn over a cached
debootstrapped bookworm tree, with a private network and a throw-away overlay.

The tree (about 300 MB, 70 s to build here) lives in /var/cache/appliance-test and is built
when absent; --volatile=overlay keeps every run's changes in memory, so it is never altered.
Commands run inside with nsenter on the container's init, which needs no machined on the host.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

CACHE = Path("/var/cache/appliance-test")
TREE = CACHE / "bookworm"
PACKAGES = "systemd,systemd-sysv,dbus,python3,curl,libnss-systemd"
MIRROR = "http://deb.debian.org/debian"


def unavailable() -> str | None:
    """Why a container cannot be booted here, or None."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn, nsenter)"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        if not shutil.which(tool):
            return f"{tool} is not installed (Debian packages debootstrap, systemd-container, util-linux)"
    return None


def build_tree() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / "bookworm.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    proc = subprocess.run(["nice", "-n", "10", "debootstrap", "--variant=minbase", f"--include={PACKAGES}",
                           "bookworm", str(tmp), MIRROR], capture_output=True, text=True, timeout=1200)
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

    def systemctl(self, verb: str, unit: str, timeout: float = 180) -> None:
        """systemctl VERB UNIT; a failure carries the unit's journal."""
        proc = subprocess.run(["nsenter", "-t", str(self.init_pid), "-a", "systemctl", verb, unit],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            log = self.sh(f"journalctl -u {unit} --no-pager -n 60", check=False)
            raise AssertionError(f"systemctl {verb} {unit} failed:\n{proc.stderr}\n{log}")

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


@contextlib.contextmanager
def booted(binds: Sequence[tuple[Path, str]]) -> Iterator[Container]:
    """Boot the container with the given read-only bind mounts (host path, container path)."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    if not (TREE / "usr/bin/python3").exists():
        build_tree()
    cmd = ["systemd-nspawn", "-D", str(TREE), "--register=no", "--keep-unit", "-b", "--private-network",
           "--volatile=overlay", "-M", f"appliance-test-{uuid.uuid4().hex[:8]}",
           *(f"--bind-ro={host}:{inside}" for host, inside in binds)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    init_pid = 0
    try:
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
        # Right after its init appears, systemctl may find no manager socket yet and print
        # nothing (twice on a loaded machine on 2026-12-02): ask again until it answers.
        state, deadline = "", time.monotonic() + 120
        while not state and time.monotonic() < deadline:
            state = box.sh("systemctl is-system-running --wait", check=False,
                           timeout=max(1.0, deadline - time.monotonic())).strip()
            if not state:
                time.sleep(0.5)
        assert state in ("running", "degraded"), state or "systemctl is-system-running never answered"
        yield box
    finally:
        if proc.poll() is None:
            try:
                if not init_pid:
                    raise OSError("no init")
                os.kill(init_pid, signal.SIGRTMIN + 4)  # systemd: poweroff
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=10)
