"""What one feature hands the composition root: its start-up and shutdown hooks, readiness
probes and extra metric collectors. Each wiring module returns one of these beside the
objects it built; the root (`appliance.services`) runs the hooks in the order it built the
features and closes them in reverse. Imports nothing of ours."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# A readiness check returns a JSON-able status dict with at least {"ok": bool}.
ReadinessCheck = Callable[[], Awaitable[dict[str, Any]]]
Hook = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    start: Hook | None = None
    close: Hook | None = None
    readiness: Mapping[str, ReadinessCheck] = field(default_factory=dict)
    collectors: tuple[Any, ...] = ()   # Prometheus collectors read at scrape time
