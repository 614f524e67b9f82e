"""`/metrics` for moderation: guard verdicts by use (`endpoint`: /v1/moderations, `input`:
`moderate = "input"` screening) and result (`safe`, `flagged`, `error`), both fixed sets."""

from __future__ import annotations

from prometheus_client import Counter

from appliance.api.metrics import labelled

MODERATION_VERDICTS = Counter("appliance_moderation_verdicts_total",
                              "Guard model verdicts, by use (endpoint, input) and result (safe, flagged, error)",
                              ["use", "result"])


def count_verdict(use: str, result: str) -> None:
    labelled(MODERATION_VERDICTS, use, result).inc()
