"""A circuit breaker for the gRPC path: after a failure, skip the remote for a cool-down.

closed -> (failure) -> open -> (cool-down elapsed) -> half-open: one probe call goes remote
while the others stay local; its success closes the breaker, its failure re-opens it.
The clock is injectable so tests need not sleep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import IntEnum

from appliance.inference.metrics import BREAKER_STATE

log = logging.getLogger(__name__)


class State(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class Breaker:
    def __init__(self, cooldown_s: float, failure_threshold: int = 1, name: str = "inference",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown_s = cooldown_s
        self.failure_threshold = failure_threshold
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        BREAKER_STATE.labels(name).set(State.CLOSED)

    @property
    def state(self) -> State:
        with self._lock:
            if self._state is State.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
                return State.HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """True if this call should try the remote path."""
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
                log.info("inference breaker closed: remote path is back", extra={"breaker": self.name})
                self._set(State.CLOSED)

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if self._state is State.HALF_OPEN or self._failures >= self.failure_threshold:
                if self._state is not State.OPEN:
                    log.warning("inference breaker open: serving in process for %.0f s", self.cooldown_s,
                                extra={"breaker": self.name})
                self._opened_at = self._clock()
                self._set(State.OPEN)

    def _set(self, state: State) -> None:
        self._state = state
        BREAKER_STATE.labels(self.name).set(int(state))
