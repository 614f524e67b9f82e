"""What the gateway knows about each backend while it routes: its breaker, the requests it
has outstanding, the models it has loaded, and how fast it has been answering.

`order(backends, model)` ranks the replicas of one model for a request: those whose
breaker is not refusing, the ones that already have `model` in memory first (a request
should not force a model swap when another host has it warm), then by fewest outstanding
requests, then by the order of the catalog. Breakers are consulted without side effects
here; `Attempt` takes a breaker's probe slot only for the backend it actually calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from appliance.domain.breaker import Breaker, State

_EWMA = 0.2  # weight of the newest time-to-first-byte in a backend's running figure


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 3
    cooldown_s: float = 5.0
    max_cooldown_s: float = 120.0


class Upstreams:
    def __init__(self, names: Iterable[str], policy: BreakerPolicy | None = None, *,
                 on_change: Callable[[str, State], None] | None = None) -> None:
        policy = policy or BreakerPolicy()
        self.breakers = {n: Breaker(policy.cooldown_s, failure_threshold=policy.failures,
                                    max_cooldown_s=policy.max_cooldown_s, name=n, on_change=on_change)
                         for n in names}
        self.outstanding = dict.fromkeys(self.breakers, 0)
        self.loaded: dict[str, frozenset[str] | None] = dict.fromkeys(self.breakers)  # None: not known
        self._ttfb_ms: dict[str, float] = {}

    def order(self, backends: Sequence[str], model: str) -> list[str]:
        """The replicas worth trying, best first (see the module docstring)."""
        if len(backends) == 1:
            return [] if self.breakers[backends[0]].refusing else list(backends)
        live = [b for b in backends if not self.breakers[b].refusing]
        rank = {b: i for i, b in enumerate(backends)}

        def key(name: str) -> tuple[int, int, int]:
            loaded = self.loaded.get(name)
            cold = 0 if loaded is not None and model in loaded else 1
            return cold, self.outstanding[name], rank[name]
        return sorted(live, key=key)

    def retry_in(self, backends: Sequence[str]) -> float:
        """Seconds until the first of `backends` lets a request through again."""
        return min((self.breakers[b].retry_in() for b in backends), default=0.0)

    def start(self, name: str) -> bool:
        """Take `name` for one call: False when its breaker refuses (its probe is out)."""
        if not self.breakers[name].allow():
            return False
        self.outstanding[name] += 1
        return True

    def done(self, name: str) -> None:
        self.outstanding[name] -= 1

    def succeeded(self, name: str, ttfb_ms: float) -> None:
        self.breakers[name].success()
        last = self._ttfb_ms.get(name)
        self._ttfb_ms[name] = ttfb_ms if last is None else last + _EWMA * (ttfb_ms - last)

    def failed(self, name: str, retry_after_s: float | None = None) -> None:
        self.breakers[name].failure(retry_after_s)

    def abandoned(self, name: str) -> None:
        self.breakers[name].abandon()

    def latency_ms(self) -> Mapping[str, float]:
        """Each backend's recent time to the first byte (a running average), where known."""
        return dict(self._ttfb_ms)

    def set_loaded(self, name: str, models: frozenset[str] | None) -> None:
        self.loaded[name] = models

    def states(self) -> dict[str, str]:
        return {n: b.state.name.lower() for n, b in self.breakers.items()}
