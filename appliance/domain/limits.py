"""Per-key limits held in memory and agreed with a shared store in the background.

Requests and tokens per minute are counted in one-minute windows and judged by a sliding
estimate: the previous window weighted by how much of it still overlaps the last 60 s,
plus the current one (`prev * (1 - f) + cur`). Counts are additive, so every worker and
every gateway replica can add its own into one shared row per key and minute.

Each worker decides alone, from what the store last said (everyone's counts) plus what it
counted since (`pending`): the serving path never waits on the network. A background task
(`take` -> the store -> `absorb`, appliance/access/sync.py) sends the pending counts as
deltas and gets the totals back every `sync_s`. Between two syncs the other workers' new
requests are unseen, so a key can overshoot by what the others admit in one interval; when
the store is unreachable (`restore`), each worker goes on with its own counts on top of the
last totals it had.

Tokens are reserved before a call (from `max_tokens`, or a default) and settled from the
real usage after it; spend (USD) is added per budget period (a UTC day or month).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from appliance.domain.errors import InsufficientQuota, RateLimited
from appliance.domain.keys import KeyRecord, Period, period_end, period_key

WINDOW_S: Final = 60
ACTIVE_S: Final = 2 * WINDOW_S   # a key seen within this long is synced even with nothing to send


@dataclass(slots=True)
class _KeyState:
    shared: dict[int, list[int]] = field(default_factory=dict)    # minute -> [requests, tokens], the store's totals
    pending: dict[int, list[int]] = field(default_factory=dict)   # minute -> [requests, tokens] counted here since
    spend_shared: dict[str, float] = field(default_factory=dict)  # period -> USD, the store's total
    spend_pending: dict[str, float] = field(default_factory=dict)
    seen_at: float = 0.0
    period: Period | None = None    # the key's budget period, when it has a budget
    last: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (when, requests, tokens) as the last admission saw them


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens counted for a request before its call, in the minute they were counted in."""

    key: str
    minute: int
    tokens: int


@dataclass(slots=True)
class SyncBatch:
    """What one sync sends: count deltas (key, minute, requests, tokens) and spend deltas
    (key, period, usd); rows with zero deltas ask for the others' totals. `read_counts`
    (key, from minute) and `read_spend` (key, period) only ask, for keys idle here."""

    counts: list[tuple[str, int, int, int]]
    spend: list[tuple[str, str, float]]
    read_counts: list[tuple[str, int]] = field(default_factory=list)
    read_spend: list[tuple[str, str]] = field(default_factory=list)


def duration(seconds: float) -> str:
    """OpenAI's `x-ratelimit-reset-*` form: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        tenths = int(seconds * 10 + 0.5)
        return f"{tenths // 10}s" if tenths % 10 == 0 else f"{tenths // 10}.{tenths % 10}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"


class Limiter:
    """Counts and judges every limited key of one worker (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}
        self._periods: dict[Period, tuple[int, str]] = {}   # period -> (UTC hour, its name): one gmtime an hour

    def _period(self, period: Period, now: float) -> str:
        """The budget period's name; days and months begin on a UTC hour, so an hour's is cached."""
        hour = int(now // 3600)
        cached = self._periods.get(period)
        if cached is not None and cached[0] == hour:
            return cached[1]
        name = period_key(period, now)
        self._periods[period] = (hour, name)
        return name

    def _state(self, key: KeyRecord, now: float) -> _KeyState:
        state = self._keys.get(key.name)
        if state is None:
            state = self._keys[key.name] = _KeyState()
        state.seen_at = now
        state.period = key.period if key.budget_usd is not None else None
        return state

    @staticmethod
    def _counts(state: _KeyState, minute: int) -> tuple[int, int]:
        shared = state.shared.get(minute)
        pending = state.pending.get(minute)
        if shared is None:
            return (pending[0], pending[1]) if pending else (0, 0)
        return (shared[0] + pending[0], shared[1] + pending[1]) if pending else (shared[0], shared[1])

    def _estimate(self, state: _KeyState, now: float, i: int) -> tuple[float, int, int, float]:
        minute = int(now // WINDOW_S)
        f = (now % WINDOW_S) / WINDOW_S
        prev, cur = self._counts(state, minute - 1)[i], self._counts(state, minute)[i]
        return prev * (1 - f) + cur, prev, cur, f

    @staticmethod
    def _estimates(state: _KeyState, now: float) -> tuple[float, float]:
        """Both sliding estimates (requests, tokens) at once: the serving path's one look
        (`_counts` of both windows, written out: it runs two to three times a request)."""
        minute = int(now // WINDOW_S)
        keep = 1 - (now % WINDOW_S) / WINDOW_S
        shared, pending = state.shared, state.pending
        pr = pt = cr = ct = 0
        if shared:
            slot = shared.get(minute - 1)
            if slot is not None:
                pr, pt = slot
            slot = shared.get(minute)
            if slot is not None:
                cr, ct = slot
        if pending:
            slot = pending.get(minute - 1)
            if slot is not None:
                pr, pt = pr + slot[0], pt + slot[1]
            slot = pending.get(minute)
            if slot is not None:
                cr, ct = cr + slot[0], ct + slot[1]
        return pr * keep + cr, pt * keep + ct

    def _wait(self, state: _KeyState, now: float, i: int, limit: int, need: int) -> float:
        """Seconds until `need` more fits under `limit`, if nothing else is counted meanwhile."""
        est, prev, cur, f = self._estimate(state, now, i)
        room = limit - need
        if est <= room:
            return 0.0
        if cur <= room and prev > 0:     # the previous window's share decays enough within this one
            return max(0.0, (1 - (room - cur) / prev) - f) * WINDOW_S
        left = (1 - f) * WINDOW_S        # else into the next window, where this one decays
        if room < 0 or cur == 0:
            return left + WINDOW_S
        return left + max(0.0, 1 - room / cur) * WINDOW_S

    def _add(self, state: _KeyState, minute: int, requests: int, tokens: int) -> None:
        slot = state.pending.get(minute)
        if slot is None:
            state.pending[minute] = [requests, tokens]
        else:
            slot[0] += requests
            slot[1] += tokens

    def _refuse(self, key: KeyRecord, state: _KeyState, now: float, i: int, limit: int, need: int) -> RateLimited:
        wait = self._wait(state, now, i, limit, need)
        what = "requests" if i == 0 else "tokens"
        return RateLimited(f"Rate limit reached for key '{key.name}': {limit} {what} per minute; "
                           f"try again in {duration(wait)}", retry_after=str(max(1, math.ceil(wait))))

    def admit(self, key: KeyRecord) -> None:
        """Count one request, or raise: RateLimited over rpm (or a tpm window already full),
        InsufficientQuota when the budget of this period is spent."""
        now = self._clock()
        state = self._state(key, now)
        if key.budget_usd is not None:
            spent = self.spent(key, now)
            if spent >= key.budget_usd:
                wait = period_end(key.period, now) - now
                raise InsufficientQuota(
                    f"Key '{key.name}' has spent its budget of ${key.budget_usd:g} for this {key.period}",
                    code="insufficient_quota", retry_after=str(max(1, math.ceil(wait))))
        if key.rpm is not None or key.tpm is not None:
            requests, tokens = self._estimates(state, now)
            if key.rpm is not None and requests + 1 > key.rpm:
                state.last = (now, requests, tokens)  # the 429's headers: what refused it, not an older look
                raise self._refuse(key, state, now, 0, key.rpm, 1)
            if key.tpm is not None and tokens >= key.tpm:
                state.last = (now, requests, tokens)
                raise self._refuse(key, state, now, 1, key.tpm, 1)
            state.last = (now, requests + 1, tokens)
        self._add(state, int(now // WINDOW_S), 1, 0)

    def reserve(self, key: KeyRecord, tokens: int) -> Reservation | None:
        """Count `tokens` (at most the key's tpm, so one large request can still pass an
        empty window) before a call, or raise RateLimited."""
        if key.tpm is None:
            return None
        now = self._clock()
        state = self._state(key, now)
        tokens = max(0, min(tokens, key.tpm))
        requests, counted = self._estimates(state, now)
        if counted + tokens > key.tpm:
            state.last = (now, requests, counted)  # the 429's headers: what refused it
            raise self._refuse(key, state, now, 1, key.tpm, tokens)
        state.last = (now, requests, counted + tokens)
        minute = int(now // WINDOW_S)
        self._add(state, minute, 0, tokens)
        return Reservation(key.name, minute, tokens)

    def settle(self, key: KeyRecord, reservation: Reservation | None, tokens: int, spend_usd: float) -> None:
        """After the call: the real token count replaces the reservation; spend is added."""
        now = self._clock()
        state = self._state(key, now)
        if key.tpm is not None:
            state.last = (0.0, 0.0, 0.0)  # the headers count again, with the real usage
            if reservation is None:
                self._add(state, int(now // WINDOW_S), 0, tokens)
            else:
                self._add(state, reservation.minute, 0, tokens - reservation.tokens)
        if key.budget_usd is not None and spend_usd > 0:
            period = self._period(key.period, now)
            state.spend_pending[period] = state.spend_pending.get(period, 0.0) + spend_usd

    def spent(self, key: KeyRecord, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        state = self._keys.get(key.name)
        if state is None:
            return 0.0
        period = self._period(key.period, now)
        return state.spend_shared.get(period, 0.0) + state.spend_pending.get(period, 0.0)

    def headers(self, key: KeyRecord) -> list[tuple[str, str]]:
        """OpenAI's `x-ratelimit-*` headers for a key with rpm or tpm: remaining after this
        request, as its admission counted it (within 50 ms; else counted again); `reset` is when
        this window's counts start to leave the estimate (a 429's Retry-After is exact)."""
        now = self._clock()
        state = self._keys.get(key.name)
        if state is None:
            requests, tokens = 0.0, 0.0
        elif now - state.last[0] < 0.05:  # what this request's admission saw, just now: no second look
            requests, tokens = state.last[1], state.last[2]
        else:
            requests, tokens = self._estimates(state, now)
        reset = duration(WINDOW_S - now % WINDOW_S) if requests or tokens else "0ms"
        out: list[tuple[str, str]] = []
        if key.rpm is not None:
            out += [("x-ratelimit-limit-requests", str(key.rpm)),
                    ("x-ratelimit-remaining-requests", str(max(0, int(key.rpm - requests)))),
                    ("x-ratelimit-reset-requests", reset if requests else "0ms")]
        if key.tpm is not None:
            out += [("x-ratelimit-limit-tokens", str(key.tpm)),
                    ("x-ratelimit-remaining-tokens", str(max(0, int(key.tpm - tokens)))),
                    ("x-ratelimit-reset-tokens", reset if tokens else "0ms")]
        return out

    # -- the background sync (appliance/access/sync.py) --

    def take(self, watch: Mapping[str, KeyRecord] | None = None, *, read: bool = False) -> SyncBatch:
        """Everything counted since the last sync, taken out of `pending`, plus zero rows for
        the keys in use so their totals come back too.

        `watch`: the directory's limited keys, kept here even while this worker does not use
        them (others may), and with `read` (at the keys poll's pace) only read from the store,
        windows and spend, so that the first request one brings here is judged on everyone's
        counts and spend, not on none. Without `watch`, a key idle here is forgotten."""
        now = self._clock()
        minute = int(now // WINDOW_S)
        counts: list[tuple[str, int, int, int]] = []
        spend: list[tuple[str, str, float]] = []
        batch = SyncBatch(counts, spend)
        for name, state in list(self._keys.items()):
            if now - state.seen_at > ACTIVE_S and not state.pending and not state.spend_pending:
                if watch is None or name not in watch:
                    del self._keys[name]
                elif read:
                    self._read(batch, watch[name], state, now, minute)
                continue
            for m in (minute - 1, minute):
                if m not in state.pending:
                    counts.append((name, m, 0, 0))
            counts += [(name, m, r, t) for m, (r, t) in state.pending.items()]
            _move(state.pending, state.shared)  # still counted while the sync is in flight
            for old in [m for m in state.shared if m < minute - 1]:
                del state.shared[old]
            if state.period is not None:
                current = self._period(state.period, now)
                if current not in state.spend_pending:
                    spend.append((name, current, 0.0))
            spend += [(name, p, u) for p, u in state.spend_pending.items()]
            for p, u in state.spend_pending.items():
                state.spend_shared[p] = state.spend_shared.get(p, 0.0) + u
            state.spend_pending = {}
        if read and watch:
            for name, key in watch.items():
                if name not in self._keys:
                    self._read(batch, key, self._keys.setdefault(name, _KeyState()), now, minute)
        return batch

    def _read(self, batch: SyncBatch, key: KeyRecord, state: _KeyState, now: float, minute: int) -> None:
        """Ask the store for an idle key's totals (kept, with `seen_at` unchanged: still idle)."""
        state.period = key.period if key.budget_usd is not None else None
        for old in [m for m in state.shared if m < minute - 1]:
            del state.shared[old]
        if key.rpm is not None or key.tpm is not None:
            batch.read_counts.append((key.name, minute - 1))
        if state.period is not None:
            batch.read_spend.append((key.name, self._period(state.period, now)))

    def absorb(self, counts: Iterable[tuple[str, int, int, int]], spend: Iterable[tuple[str, str, float]]) -> None:
        """The store's totals after a sync (every worker's counts, ours of the batch included)."""
        for name, minute, requests, tokens in counts:
            state = self._keys.get(name)
            if state is not None:
                state.shared[minute] = [requests, tokens]
        for name, period, usd in spend:
            state = self._keys.get(name)
            if state is not None:
                state.spend_shared = {period: usd}

    def restore(self, batch: SyncBatch) -> None:
        """The store did not take the batch: its counts go back from the totals to `pending`,
        to be sent again."""
        for name, minute, requests, tokens in batch.counts:
            state = self._keys.get(name)
            if state is not None and (requests or tokens):
                self._add(state, minute, requests, tokens)
                shared = state.shared.get(minute)
                if shared is not None:
                    shared[0] -= requests
                    shared[1] -= tokens
        for name, period, usd in batch.spend:
            state = self._keys.get(name)
            if state is not None and usd:
                state.spend_pending[period] = state.spend_pending.get(period, 0.0) + usd
                if period in state.spend_shared:
                    state.spend_shared[period] -= usd


def _move(pending: dict[int, list[int]], shared: dict[int, list[int]]) -> None:
    """Add what `take` sends to the last totals, and empty `pending`: between `take` and
    `absorb` (the store's round trip) a request must still see this worker's own counts, or
    the key could overshoot by them every sync."""
    for minute, (requests, tokens) in pending.items():
        slot = shared.get(minute)
        if slot is None:
            shared[minute] = [requests, tokens]
        else:
            slot[0] += requests
            slot[1] += tokens
    pending.clear()
