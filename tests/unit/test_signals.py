"""A stop signal reaching a Granian worker while it starts stops it, at whatever moment it comes."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import time
from collections.abc import Iterator

import granian._signals as granian_signals
import pytest
import uvloop
from granian import Granian
from granian._granian import WorkerSignal
from granian.server.common import AbstractServer
from granian.server.mp import MPServer

from appliance import signals
from tests.pins import check_pin
from tests.procs import ROOT

SIGNALS = "appliance/signals.py"


class MainProcess:
    def __init__(self) -> None:
        self.stops: list[int] = []

    def signal_handler_interrupt(self, signum: int, frame: object) -> None:
        self.stops.append(signum)


class StopEvent:
    """Stands in for Granian's WorkerSignal: counts `set()` calls."""

    def __init__(self) -> None:
        self.sets = 0

    def set(self) -> None:
        self.sets += 1


@pytest.fixture
def own_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    set_loop_signals = granian_signals.set_loop_signals
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        granian_signals.set_loop_signals = set_loop_signals
        signals._held.clear()


def test_the_main_process_still_stops_and_a_forked_worker_holds_the_signal() -> None:
    main = MainProcess()
    signals.guard_forks(main)

    pid = os.fork()
    if pid == 0:  # the worker, before appliance.asgi runs
        main.signal_handler_interrupt(signal.SIGTERM, None)
        os._exit(0 if signals._held == [signal.SIGTERM] and not main.stops else 1)
    _, status = os.waitpid(pid, 0)
    main.signal_handler_interrupt(signal.SIGTERM, None)

    assert os.waitstatus_to_exitcode(status) == 0
    assert main.stops == [signal.SIGTERM]
    assert signals._held == []


def test_a_stop_sent_to_a_worker_before_it_first_runs_is_held_not_cleared() -> None:
    # CPython clears pending signals in a new child; the main process often stops a worker
    # it has just forked before that worker has run at all (the CI failure this fixes).
    main = MainProcess()
    signals.guard_forks(main)
    saved = signal.signal(signal.SIGTERM, main.signal_handler_interrupt)
    try:
        lost = 0
        for _ in range(20):
            pid = os.fork()
            if pid == 0:
                deadline = time.monotonic() + 2
                while not signals._held and time.monotonic() < deadline:
                    time.sleep(0.001)
                os._exit(0 if signals._held == [signal.SIGTERM] else 1)
            os.kill(pid, signal.SIGTERM)  # at once: the child has most likely not run yet
            _, status = os.waitpid(pid, 0)
            lost += os.waitstatus_to_exitcode(status) != 0
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert lost == 0 and main.stops == []


def test_a_signal_while_the_loop_is_not_running_still_stops_the_worker(own_handlers: None) -> None:
    # uvloop drops a signal that arrives between two runs of the loop (Granian's lifespan
    # start-up and its server start); the worker's stop event must be set all the same.
    loop = uvloop.new_event_loop()
    try:
        event = signals.stop_event(StopEvent, loop)
        loop.run_until_complete(asyncio.sleep(0.01))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert event.sets == 1
        os.kill(os.getpid(), signal.SIGTERM)  # systemd and Granian's main process both send one
        loop.run_until_complete(asyncio.sleep(0.01))
        assert event.sets == 1
    finally:
        loop.close()


def test_a_held_signal_stops_the_worker_once_its_loop_runs(own_handlers: None) -> None:
    signals.hold()
    os.kill(os.getpid(), signal.SIGTERM)  # during the worker's imports
    loop = uvloop.new_event_loop()
    try:
        event = signals.stop_event(StopEvent, loop)
        assert event.sets == 0  # Granian registers its stop callback after this returns
        loop.run_until_complete(asyncio.sleep(0.01))
        assert event.sets == 1
    finally:
        loop.close()


# What signals.py leans on in Granian's private surface (its docstring): when one of these
# fails after an upgrade, read signals.py against the new Granian before moving the pin.

def test_granian_is_the_pinned_version() -> None:
    check_pin("granian", SIGNALS)


def test_granian_workers_pick_up_the_replaced_signal_setup() -> None:
    # hold() replaces granian._signals.set_loop_signals; the ASGI worker must import it when
    # it runs (after our app module loaded), not when Granian is imported.
    version = check_pin("granian", SIGNALS)
    assert Granian is MPServer, f"granian {version}: Granian is {Granian.__name__}, not MPServer (worker processes)"
    serve = inspect.getsource(AbstractServer.serve)
    assert "Interfaces.ASGI: self._spawn_asgi_lifespan_worker" in serve, \
        f"granian {version}: ASGI workers no longer start in MPServer._spawn_asgi_lifespan_worker"
    source = inspect.getsource(MPServer._spawn_asgi_lifespan_worker)
    assert "from granian._signals import set_loop_signals" in source, \
        f"granian {version}: the ASGI worker no longer imports granian._signals.set_loop_signals when it starts"
    assert source.index("set_loop_signals(loop)") < source.index("serve(scheduler"), \
        f"granian {version}: the ASGI worker no longer sets up its signals before serving"


def test_what_hold_replaces_takes_a_loop_and_gives_the_worker_signal(own_handlers: None) -> None:
    version = check_pin("granian", SIGNALS)
    original = getattr(granian_signals, "set_loop_signals", None)
    assert original is not None, f"granian {version}: granian._signals.set_loop_signals is gone ({SIGNALS} replaces it)"
    assert list(inspect.signature(original).parameters) == ["loop"], \
        f"granian {version}: set_loop_signals takes {inspect.signature(original)} now, {SIGNALS} expects (loop)"
    signals.hold()
    from granian._signals import set_loop_signals  # as the worker does, once it runs

    for setup in (original, set_loop_signals):
        loop = uvloop.new_event_loop()
        try:
            event = setup(loop)
        finally:
            loop.close()
        assert isinstance(event, WorkerSignal), f"granian {version}: set_loop_signals returns {type(event)} now"


def test_the_worker_signal_is_made_and_set_as_signals_py_does() -> None:
    version = check_pin("granian", SIGNALS)
    made = {"WorkerSignal()": str(inspect.signature(WorkerSignal)),
            "WorkerSignal.set": str(inspect.signature(WorkerSignal.set)),
            "WorkerSignal.add_cb": str(inspect.signature(WorkerSignal.add_cb))}
    assert made == {"WorkerSignal()": "()", "WorkerSignal.set": "(self, /)", "WorkerSignal.add_cb": "(self, /, cb)"}, \
        f"granian {version}: WorkerSignal changed: {made}"
    WorkerSignal().set()


def test_the_main_process_handler_guard_forks_wraps_is_the_one_granian_installs() -> None:
    version = check_pin("granian", SIGNALS)
    assert callable(getattr(Granian, "signal_handler_interrupt", None)), \
        f"granian {version}: the server has no signal_handler_interrupt ({SIGNALS} wraps it)"
    assert "set_main_signals(self.signal_handler_interrupt" in inspect.getsource(AbstractServer.startup), \
        f"granian {version}: startup() no longer installs self.signal_handler_interrupt (looked up then) as the handler"


def test_nothing_else_touches_granians_private_modules() -> None:
    touching = [str(path.relative_to(ROOT)) for path in (ROOT / "appliance").rglob("*.py")
                if "granian._" in path.read_text() and path.relative_to(ROOT).as_posix() != SIGNALS]
    assert touching == [], f"Granian's private surface belongs in {SIGNALS} alone"
