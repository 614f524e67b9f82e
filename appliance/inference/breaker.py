"""The gRPC path's breaker reports: its state as a Prometheus gauge and a log line."""

from __future__ import annotations

import logging

from appliance.domain.breaker import Breaker, State
from appliance.inference.metrics import BREAKER_STATE

log = logging.getLogger(__name__)

def _report(name: str, state: State) -> None:
    BREAKER_STATE.labels(name).set(int(state))
    if state is State.OPEN:
        log.warning("inference breaker open: serving in process", extra={"breaker": name})
    elif state is State.CLOSED:
        log.info("inference breaker closed: remote path is usable", extra={"breaker": name})


def inference_breaker(cooldown_s: float, name: str = "inference") -> Breaker:
    return Breaker(cooldown_s, name=name, on_change=_report)
