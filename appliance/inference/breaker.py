"""The gRPC path's breakers report their state as a Prometheus gauge and a log line."""

from __future__ import annotations

import logging

from appliance.domain.breaker import Breaker, reporter
from appliance.inference.metrics import BREAKER_STATE

_report = reporter(lambda name, state: BREAKER_STATE.labels(name).set(state), logging.getLogger(__name__),
                   opened="inference breaker open: serving in process",
                   closed="inference breaker closed: remote path is usable")


def inference_breaker(cooldown_s: float, name: str = "inference") -> Breaker:
    return Breaker(cooldown_s, name=name, on_change=_report)
