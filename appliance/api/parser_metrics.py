"""`/metrics` for the output parser chain: one counter, labelled by stage and outcome, both
from the fixed sets in `domain/parsers/stages.py` (bounded whatever a model writes)."""

from __future__ import annotations

from prometheus_client import Counter

from appliance.api.metrics import labelled

PARSER_EVENTS = Counter("appliance_parser_events_total",
                        "Output parser chain: tool calls recovered or left as text, reasoning split, images "
                        "inlined or refused, strict json_schema answers checked", ["stage", "outcome"])


def count_parser_event(stage: str, outcome: str) -> None:
    labelled(PARSER_EVENTS, stage, outcome).inc()
