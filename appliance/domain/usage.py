"""Usage as values: what `/admin/usage` and `appliance usage` are asked, the rows they answer,
and the latency histogram that lets hourly rollups still say p50 and p95.

A rollup cannot keep every latency, and percentiles do not add up, so each one keeps counts
in log-spaced buckets: `BUCKETS_PER_OCTAVE` buckets per doubling from 1 ms, the last one
open-ended (past about 17 minutes). Buckets add up across rows, and a percentile read from
them (interpolated within its bucket) is within one bucket's width, 9%, of the true one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Protocol

from appliance.domain.errors import InvalidRequest

GROUPS: Final = ("key", "model", "backend", "day")
BUCKETS_PER_OCTAVE: Final = 8
OCTAVES: Final = 20                      # 2^20 ms: about 17.5 minutes
BUCKETS: Final = BUCKETS_PER_OCTAVE * OCTAVES + 2   # [0, 1 ms], one per step, then the rest
_RELATIVE: Final = re.compile(r"^(\d{1,6})([mhdw])$")
_UNIT: Final = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def bucket(latency_ms: float) -> int:
    """The histogram bucket of one latency: 0 up to 1 ms, then i for (2^((i-1)/8), 2^(i/8)] ms."""
    if not latency_ms > 1.0:  # NaN too
        return 0
    return min(math.ceil(math.log2(latency_ms) * BUCKETS_PER_OCTAVE), BUCKETS - 1)


def _upper(i: int) -> float:
    return float(2.0 ** (i / BUCKETS_PER_OCTAVE))


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) of the latencies counted in `counts`, in ms; None when empty.
    Interpolated geometrically within the bucket it falls in."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n <= 0:
            continue
        if seen + n >= rank:
            if i == 0:
                return 1.0
            if i >= BUCKETS - 1:
                return _upper(BUCKETS - 2)
            low, high = _upper(i - 1), _upper(i)
            return float(low * (high / low) ** ((rank - seen) / n))
        seen += n
    return _upper(BUCKETS - 2)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    group_by: tuple[str, ...]
    since: datetime | None = None
    until: datetime | None = None


@dataclass(slots=True)
class UsageRow:
    """One group's totals; the columns not grouped by are None."""

    key: str | None
    model: str | None
    backend: str | None
    day: date | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    gpu_seconds: float
    errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "model": self.model, "backend": self.backend,
                "day": self.day.isoformat() if self.day else None, "requests": self.requests,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 6), "gpu_seconds": round(self.gpu_seconds, 3),
                "errors": self.errors,
                "latency_p50_ms": None if self.latency_p50_ms is None else round(self.latency_p50_ms, 1),
                "latency_p95_ms": None if self.latency_p95_ms is None else round(self.latency_p95_ms, 1)}


class UsageReader(Protocol):
    """Where usage totals are read from. Raises `DependencyUnavailable` when it is down."""

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        ...


def parse_time(value: str, param: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 date or date-time (UTC unless it says otherwise), or a time ago: `90m`,
    `24h`, `7d`, `2w`."""
    text = value.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return (now or datetime.now(UTC)) - int(relative.group(1)) * _UNIT[relative.group(2)]
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{param} must be an ISO 8601 date or time, or a time ago like 24h or 7d",
                             param=param) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_query(group_by: str | None, since: str | None, until: str | None,
                now: datetime | None = None) -> UsageQuery:
    """`group_by` is one of `GROUPS` or several, comma-separated (default `key`)."""
    names = tuple(g.strip() for g in (group_by or "key").split(",") if g.strip())
    unknown = [g for g in names if g not in GROUPS]
    if not names or unknown:
        raise InvalidRequest(f"group_by must be one or more of {', '.join(GROUPS)} (comma-separated)",
                             param="group_by")
    start = parse_time(since, "since", now) if since else None
    end = parse_time(until, "until", now) if until else None
    if start and end and end <= start:
        raise InvalidRequest("until must be after since", param="until")
    return UsageQuery(tuple(dict.fromkeys(names)), start, end)
