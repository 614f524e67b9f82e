"""The limiter alone: sliding windows, reservations settled, the sync's deltas and totals."""

from __future__ import annotations

import pytest

from appliance.domain.errors import InsufficientQuota, RateLimited
from appliance.domain.keys import KeyRecord, period_key, weakness
from appliance.domain.limits import Limiter, SyncBatch, duration


class Clock:
    def __init__(self, t: float = 60_000 * 60.0) -> None:  # the start of a minute
        self.t = t

    def __call__(self) -> float:
        return self.t


def key(**limits: object) -> KeyRecord:
    return KeyRecord("k", "0" * 64, **limits)  # type: ignore[arg-type]


def test_rpm_slides_and_says_when() -> None:
    clock = Clock()
    limiter, k = Limiter(clock), key(rpm=2)
    limiter.admit(k)
    limiter.admit(k)
    with pytest.raises(RateLimited) as refused:
        limiter.admit(k)
    assert refused.value.retry_after == "90"  # half way into the next window, half of these two still count
    assert dict(limiter.headers(k))["x-ratelimit-remaining-requests"] == "0"
    clock.t += 90  # half of the previous window still counts: 2 * 0.5 = 1, one more fits
    limiter.admit(k)
    with pytest.raises(RateLimited):
        limiter.admit(k)


def test_tokens_are_reserved_then_settled() -> None:
    clock = Clock()
    limiter, k = Limiter(clock), key(tpm=1000)
    first = limiter.reserve(k, 900)
    with pytest.raises(RateLimited):
        limiter.reserve(k, 900)          # the first call's reservation holds the window
    limiter.settle(k, first, 20, 0.0)    # its real usage was 20 tokens
    assert limiter.reserve(k, 900) is not None
    assert dict(limiter.headers(k))["x-ratelimit-remaining-tokens"] == "80"


def test_budget_spent_is_insufficient_quota() -> None:
    limiter, k = Limiter(Clock()), key(budget_usd=0.01, period="day")
    limiter.admit(k)
    limiter.settle(k, None, 10, 0.02)
    with pytest.raises(InsufficientQuota) as refused:
        limiter.admit(k)
    assert refused.value.code == "insufficient_quota"


def test_sync_sends_deltas_and_takes_everyones_totals() -> None:
    clock = Clock()
    limiter, k = Limiter(clock), key(rpm=3)
    limiter.admit(k)
    batch = limiter.take()
    assert (k.name, int(clock.t // 60), 1, 0) in batch.counts
    limiter.absorb([(k.name, int(clock.t // 60), 3, 0)], [])   # two more from other workers
    with pytest.raises(RateLimited):
        limiter.admit(k)
    assert dict(limiter.headers(k))["x-ratelimit-remaining-requests"] == "0"   # the refusal's count, not the admission's
    other = KeyRecord("other", "1" * 64, rpm=10)
    limiter.admit(other)
    limiter.restore(limiter.take())      # a failed sync loses nothing: sent again next time
    assert ("other", int(clock.t // 60), 1, 0) in limiter.take().counts


def test_counts_in_flight_to_the_store_still_count_and_a_failed_sync_does_not_count_them_twice() -> None:
    clock = Clock()
    limiter, k = Limiter(clock), key(rpm=2)
    limiter.admit(k)
    limiter.admit(k)
    batch = limiter.take()               # the sync's round trip begins: not yet absorbed
    with pytest.raises(RateLimited):
        limiter.admit(k)
    limiter.restore(batch)               # the store did not take them
    with pytest.raises(RateLimited):
        limiter.admit(k)
    assert (k.name, int(clock.t // 60), 2, 0) in limiter.take().counts
    clock.t += 120                       # both windows past: nothing was counted twice
    limiter.admit(k)
    limiter.admit(k)


def test_a_worker_reads_the_totals_of_keys_it_has_not_used_so_their_first_request_is_judged_on_them() -> None:
    clock = Clock(60_000 * 60.0 + 30)
    minute, day = int(clock.t // 60), period_key("day", clock.t)
    rpm, budget = KeyRecord("rpm", "1" * 64, rpm=3), KeyRecord("budget", "2" * 64, budget_usd=0.01, period="day")
    watch = {k.name: k for k in (rpm, budget)}
    worker = Limiter(clock)
    assert worker.take(watch).read_counts == []            # read at the keys poll's pace only
    batch = worker.take(watch, read=True)
    assert (batch.counts, batch.spend) == ([], [])          # idle here: nothing written, only read
    assert batch.read_counts == [("rpm", minute - 1)] and batch.read_spend == [("budget", day)]
    worker.absorb([("rpm", minute, 3, 0)], [("budget", day, 0.02)])   # what the other workers did
    with pytest.raises(RateLimited) as refused:
        worker.admit(rpm)
    assert refused.value.retry_after is not None
    with pytest.raises(InsufficientQuota):
        worker.admit(budget)
    clock.t += 121
    assert worker.take(watch).counts == []                   # idle here again: kept, not written
    assert worker.take({}, read=True) == SyncBatch([], [])   # out of the directory (revoked): forgotten


def test_weak_keys_and_durations() -> None:
    assert weakness("sk-1234") and weakness("changeme") and weakness("short")
    assert weakness("aaaaaaaaaaaaaaaaaaaaaaaa")
    assert weakness("appl-Zx9Qv2Lr8Tt4Yw6Pp0Kk") is None
    assert [duration(0.02), duration(1.5), duration(360)] == ["20ms", "1.5s", "6m0s"]
