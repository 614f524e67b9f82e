"""A circuit breaker: after failures, stop calling a dependency for a cool-down.

closed -> (`failure_threshold` consecutive failures) -> open -> (cool-down elapsed) ->
half-open: one probe call goes through while the others are refused; its success closes the
breaker, its failure re-opens it with the cool-down doubled, up to `max_cooldown_s`. An
open breaker costs a caller nothing: no connection attempt, no timeout.

Used for the gRPC inference path (refused calls are served in process), the knowledge
store (refused calls answer without retrieval at once, instead of after the pool's
timeout) and, with routing, for backends. `on_change(name, state)` reports each state
change (the adapters turn it into a Prometheus gauge and a log line); the clock is
injectable so tests need not sleep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import IntEnum


class State(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class Breaker:
    def __init__(self, cooldown_s: float, *, failure_threshold: int = 1, max_cooldown_s: float | None = None,
                 name: str = "breaker", on_change: Callable[[str, State], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_cooldown_s = cooldown_s
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = cooldown_s if max_cooldown_s is None else max(max_cooldown_s, cooldown_s)
        self.failure_threshold = failure_threshold
        self.name = name
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()  # the gRPC client may be called from executor threads
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        if on_change is not None:
            on_change(name, State.CLOSED)

    @property
    def state(self) -> State:
        with self._lock:
            if self._state is State.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
                return State.HALF_OPEN
            return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        with self._lock:
            if self._state is not State.OPEN:
                return 0.0
            return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """True if this call should go to the dependency."""
        with self._lock:
            if self._state is State.CLOSED:
                return True
            if self._state is State.OPEN:
                if self._clock() - self._opened_at < self.cooldown_s:
                    return False
                self._set(State.HALF_OPEN)
            if self._probing:
                return False
            self._probing = True
            return True

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probing = False
            if self._state is not State.CLOSED:
                self.cooldown_s = self.base_cooldown_s
                self._set(State.CLOSED)

    def failure(self, retry_after_s: float | None = None) -> None:
        """A failed call. `retry_after_s`, the dependency's own Retry-After, opens the
        breaker at once for that long (up to the cap): it knows best when it can take more."""
        with self._lock:
            self._failures += 1
            self._probing = False
            if retry_after_s is not None and retry_after_s > 0:
                self.cooldown_s = min(retry_after_s, self.max_cooldown_s)
            elif self._state is State.HALF_OPEN:
                self.cooldown_s = min(self.cooldown_s * 2, self.max_cooldown_s)
            elif self._failures < self.failure_threshold:
                return
            self._opened_at = self._clock()
            if self._state is not State.OPEN:
                self._set(State.OPEN)

    @property
    def refusing(self) -> bool:
        """Open and still cooling down: a call now would be refused (no side effect)."""
        with self._lock:
            return self._state is State.OPEN and self._clock() - self._opened_at < self.cooldown_s

    def abandon(self) -> None:
        """A call that was let through ended without a verdict (cancelled): let another probe."""
        with self._lock:
            self._probing = False

    def _set(self, state: State) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(self.name, state)


def reporter(set_state: Callable[[str, int], None], log: logging.Logger, *, opened: str, closed: str,
             key: str = "breaker") -> Callable[[str, State], None]:
    """An `on_change` that sets a gauge (`set_state(name, state)`) and logs what an operator
    looks for: `opened` at warning, `closed` at info, with the breaker's name under `key`."""
    def report(name: str, state: State) -> None:
        set_state(name, int(state))
        if state is State.OPEN:
            log.warning(opened, extra={key: name})
        elif state is State.CLOSED:
            log.info(closed, extra={key: name})
    return report
