"""The circuit breaker's states, with an injected clock."""

from __future__ import annotations

from appliance.domain.breaker import Breaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_cools_down_and_lets_one_probe_through() -> None:
    clock = Clock()
    changes: list[tuple[str, State]] = []
    breaker = Breaker(30, name="unit", clock=clock, on_change=lambda n, s: changes.append((n, s)))
    assert breaker.allow() and breaker.state is State.CLOSED
    breaker.failure()
    assert breaker.state is State.OPEN and not breaker.allow() and breaker.retry_in() == 30
    clock.now += 30
    assert breaker.state is State.HALF_OPEN
    assert breaker.allow()            # the one probe
    assert not breaker.allow()        # the others wait while it is out
    breaker.success()
    assert breaker.state is State.CLOSED and breaker.allow()
    assert [s for _, s in changes] == [State.CLOSED, State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_opens_only_after_the_threshold_of_consecutive_failures() -> None:
    breaker = Breaker(10, failure_threshold=3, clock=Clock())
    breaker.failure()
    breaker.failure()
    breaker.success()                 # not consecutive: counting starts again
    breaker.failure()
    breaker.failure()
    assert breaker.state is State.CLOSED
    breaker.failure()
    assert breaker.state is State.OPEN


def test_a_failed_probe_doubles_the_cool_down_up_to_the_cap_and_success_resets_it() -> None:
    clock = Clock()
    breaker = Breaker(5, max_cooldown_s=12, clock=clock)
    breaker.failure()
    waits = []
    for _ in range(3):
        clock.now += breaker.cooldown_s
        assert breaker.allow()
        breaker.failure()
        waits.append(breaker.cooldown_s)
    assert waits == [10, 12, 12]
    assert not breaker.allow()
    clock.now += 12
    assert breaker.allow()
    breaker.success()
    assert breaker.cooldown_s == 5 and breaker.state is State.CLOSED


def test_an_abandoned_probe_lets_the_next_caller_probe() -> None:
    clock = Clock()
    breaker = Breaker(1, clock=clock)
    breaker.failure()
    clock.now += 1
    assert breaker.allow() and not breaker.allow()
    breaker.abandon()                 # the probe was cancelled: no verdict
    assert breaker.allow()
