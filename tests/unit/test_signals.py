"""A stop signal reaching a freshly forked Granian worker is held for it, not swallowed."""

from __future__ import annotations

import os
import signal

from appliance import signals


class MainProcess:
    def __init__(self) -> None:
        self.stops: list[int] = []

    def signal_handler_interrupt(self, signum: int, frame: object) -> None:
        self.stops.append(signum)


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
