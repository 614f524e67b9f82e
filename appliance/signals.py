"""Not losing a SIGTERM that reaches a Granian worker while it is still starting.

A forked worker inherits the main process's Python signal handler, and Granian installs the
worker's own handler only after our app factory has run (imports, models): a SIGTERM in
that window is swallowed and the main process then waits out `workers_kill_timeout`.
`hold()` records such a signal; `redeliver()` sends it again once start-up is complete.
`guard_forks()` closes the window before `hold()`: the main process's handler, inherited by
a worker forked moments before the signal, records it too instead of acting on the main
process's state (a copy, in the worker, that nothing reads).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

_held: list[int] = []


def _record(signum: int, frame: FrameType | None) -> None:
    _held.append(signum)


def hold() -> None:
    """Record SIGTERM/SIGINT until `redeliver()` (call first thing in the worker)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _record)


def redeliver(loop: asyncio.AbstractEventLoop, delay_s: float = 0.2) -> bool:
    """Send a held stop signal to this process again, shortly: Granian starts its server after
    the lifespan start-up, and a stop requested before that is not seen by it. True when a
    signal was held."""
    if not _held:
        return False
    loop.call_later(delay_s, os.kill, os.getpid(), _held[0])
    _held.clear()
    return True


def guard_forks(server: Any, attribute: str = "signal_handler_interrupt") -> None:
    """Wrap `server`'s stop handler (looked up when it installs its signals): in the process
    that wrapped it, the handler runs as before; in a process forked from it, the signal
    is held for `redeliver()`."""
    main_pid = os.getpid()
    handler: Callable[..., None] = getattr(server, attribute)

    def guarded(signum: int | None = None, frame: FrameType | None = None, *args: Any, **kwargs: Any) -> None:
        if os.getpid() != main_pid:
            _held.append(signum if signum is not None else signal.SIGTERM)
            return
        handler(signum, frame, *args, **kwargs)

    setattr(server, attribute, guarded)
