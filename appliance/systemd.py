"""sd_notify: READY, WATCHDOG, STOPPING and STATUS. Every call is a no-op without NOTIFY_SOCKET."""

from __future__ import annotations

import os

import sdnotify

_notifier: sdnotify.SystemdNotifier | None = None


def _send(message: str) -> None:
    global _notifier
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    if _notifier is None:
        _notifier = sdnotify.SystemdNotifier()
    _notifier.notify(message)


def notify_ready(status: str = "") -> None:
    _send("READY=1" + (f"\nSTATUS={status}" if status else ""))


def notify_watchdog() -> None:
    _send("WATCHDOG=1")


def notify_stopping() -> None:
    _send("STOPPING=1")


def notify_status(status: str) -> None:
    _send(f"STATUS={status}")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when no watchdog is set.

    Granian's workers are children of the unit's main process, so WATCHDOG_PID never names
    them; the gateway unit sets NotifyAccess=all and every worker pings.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    return int(usec) / 2_000_000
