"""Not losing a stop signal that reaches a Granian worker while it is starting.

A worker has four start-up windows in which a SIGTERM (which is how the main process stops
its workers) is dropped, and the main process then waits out `workers_kill_timeout`:

0. The fork itself: CPython clears every pending signal in a new child (`os.fork()` runs
   `_PySignal_AfterFork`), so a SIGTERM that the main process sends before the child first
   runs (on a busy machine the parent runs on and stops the workers it has just forked) is
   lost. `guard_forks()` blocks the stop signals around each fork; the child unblocks them
   after that clearing, and a signal sent meanwhile is delivered then.
1. From the fork until `appliance.asgi` is imported, the worker runs the main process's
   handler, which stops a copy of the main process's state that nothing reads.
   `guard_forks()` wraps that handler: in a forked process it holds the signal instead.
2. From that import (imports, models) until Granian installs the worker's handler:
   `hold()`, the first thing `appliance.asgi` does, holds the signal.
3. After that, Granian hands stop signals to the event loop, and uvloop discards a signal
   that arrives while it is not running: between the lifespan start-up and the server
   start, say. `hold()` also replaces Granian's handler setup with `stop_event()`: a plain
   Python handler sets the worker's stop event whether the loop runs or not, and a held
   signal sets it as soon as the loop runs (Granian's server sees a stop set before it
   starts).

Granian has no public hook for any of this, so this module (and only this one) leans on its
private surface: it replaces `granian._signals.set_loop_signals(loop)`, which the ASGI
worker imports when it starts (`MPServer._spawn_asgi_lifespan_worker`), builds the stop
event from `granian._granian.WorkerSignal` (`set()`, and Granian's `add_cb()`), and wraps
the server's `signal_handler_interrupt`, which `startup()` installs as the main process's
handler. Granian is pinned exactly in pyproject.toml for this; tests/unit/test_signals.py
fails, naming what changed, when an upgrade changes any of it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any

import granian._signals as granian_signals
from granian._granian import WorkerSignal

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_held: list[int] = []


def _record(signum: int, frame: FrameType | None) -> None:
    _held.append(signum)


def hold() -> None:
    """Hold SIGTERM/SIGINT until Granian sets up the worker's stop event, then set it (call
    first thing in the worker, before Granian loads the app)."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _record)
    granian_signals.set_loop_signals = partial(stop_event, WorkerSignal)


def stop_event(make_event: Callable[[], Any], loop: Any) -> Any:
    """Granian's `set_loop_signals(loop)`: the worker's stop event, set by a plain Python
    handler (run whether the loop runs or not), only once (a second `set()` before the
    server has taken the first blocks for good), and as soon as the loop runs (the lifespan
    start-up) if a signal was held: Granian registers its stop callback after this returns."""
    event = make_event()
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(signum)
            event.set()

    for sig in _STOP_SIGNALS:
        signal.signal(sig, stop)
    if _held:
        loop.call_soon(stop, _held.pop(), None)
        _held.clear()
    return event


def _block_stops() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def _unblock_stops() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


_fork_mask: list[bool] = []


def guard_forks(server: Any, attribute: str = "signal_handler_interrupt") -> None:
    """Wrap `server`'s stop handler (looked up when it installs its signals): in the process
    that wrapped it, the handler runs as before; in a process forked from it, the signal
    is held for `hold()`'s handler setup. From now on a stop signal sent to a child while it
    is being forked waits for it (window 0 above) instead of being cleared."""
    if not _fork_mask:  # once per process: fork hooks cannot be removed
        os.register_at_fork(before=_block_stops, after_in_parent=_unblock_stops, after_in_child=_unblock_stops)
        _fork_mask.append(True)
    main_pid = os.getpid()
    handler: Callable[..., None] = getattr(server, attribute)

    def guarded(signum: int | None = None, frame: FrameType | None = None, *args: Any, **kwargs: Any) -> None:
        if os.getpid() != main_pid:
            _held.append(signum if signum is not None else signal.SIGTERM)
            return
        handler(signum, frame, *args, **kwargs)

    setattr(server, attribute, guarded)
