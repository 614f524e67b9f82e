"""The relay as a process: `appliance relay`, started and kept running by `appliance serve`.

Workers only write the spool; this child process does every NATS round trip, so the
serving processes spend no CPU on publishing. `RelaySupervisor` (in the serve process)
starts it before Granian forks the workers, restarts it if it dies, and on shutdown lets
it publish what the workers flushed on their way out before it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import threading

from appliance import children, logs
from appliance.config import Settings
from appliance.events.relay import Relay

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
PARENT_CHECK_S = 1.0


def relay_for(settings: Settings) -> Relay:
    cfg = settings.events
    assert settings.nats_url
    return Relay(settings.state_dir / "spool", settings.nats_url, batch=cfg.relay_batch,
                 publish_timeout_s=cfg.publish_timeout_s, duplicate_window_s=cfg.duplicate_window_s,
                 poll_s=cfg.relay_poll_s, drain_s=cfg.relay_drain_s)


def run(settings: Settings) -> int:
    """`appliance relay`: relay until SIGTERM/SIGINT or until the parent process is gone."""
    logs.configure(settings.log_level)
    if not settings.nats_url:
        print("config error: APPLIANCE_NATS_URL: the relay needs NATS", flush=True)
        return 2
    # Serving comes first: when the CPU is short the relay yields and the spool absorbs the
    # difference; it catches up as soon as there is room (on an idle core, at once).
    os.nice(settings.events.relay_nice)
    asyncio.run(_main(relay_for(settings)))
    return 0


async def _main(relay: Relay) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()

    async def orphaned() -> None:  # the serve process died without stopping us
        while os.getppid() == parent:
            await asyncio.sleep(PARENT_CHECK_S)
        stop.set()

    watcher = asyncio.create_task(orphaned())
    log.info("event relay started", extra={"spool": str(relay.root)})
    try:
        await relay.run(stop)
    finally:
        watcher.cancel()
        log.info("event relay stopped", extra={"published": relay.status.published,
                                               "spool_bytes": relay.status.spool_bytes})


class RelaySupervisor:
    """Keeps one `appliance relay` child running for the lifetime of `appliance serve`."""

    def __init__(self, stop_timeout_s: float) -> None:
        self._stop_timeout = stop_timeout_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._watch, name="relay-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        with self._lock:
            if not self._stopping.is_set():
                self._proc = subprocess.Popen(children.command("relay"), env=children.environment(),
                                              stdin=subprocess.DEVNULL)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            log.error("event relay exited; restarting it (events wait in the spool meanwhile)",
                      extra={"exit_code": code})
            if self._stopping.wait(RESTART_DELAY_S):
                return
            self._spawn()

    def stop(self) -> None:
        """SIGTERM the relay and wait for it to drain (bounded), then SIGKILL."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(self._stop_timeout)
        except subprocess.TimeoutExpired:
            log.error("event relay did not stop in time; killed (its events stay in the spool)")
            proc.kill()
            proc.wait()
