"""Not losing a SIGTERM that reaches a Granian worker while it is still starting.

A forked worker inherits the main process's Python signal handler, and Granian installs the
worker's own handler only after our app factory has run (imports, models): a SIGTERM in
that window is swallowed and the main process then waits out `workers_kill_timeout`.
`hold()` records such a signal; `redeliver()` sends it again once start-up is complete.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

_held: list[int] = []


def _record(signum: int, frame: FrameType | None) -> None:
    _held.append(signum)


def hold() -> None:
    """Record SIGTERM/SIGINT until `redeliver()` (call first thing in the worker)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _record)


def redeliver() -> bool:
    """Send a held stop signal to this process again; True when there was one."""
    if not _held:
        return False
    os.kill(os.getpid(), _held[0])
    _held.clear()
    return True
