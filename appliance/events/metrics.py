"""Prometheus metrics of the event pipeline, as the gateway's `/metrics` shows them.

Workers count what they write to the spool; the relay's counters come from its status file
(relay.json, rewritten every second: spool_root.py) and the spool's size from the files themselves, read
at scrape time, so they are right whichever worker answers the scrape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from appliance.events.spool import pending_bytes
from appliance.events.spool_root import read_status, slot_dirs

SPOOLED = Counter("appliance_events_spooled_total", "Outcomes written ahead to the event spool, by kind", ["kind"])
DROPPED = Counter("appliance_events_dropped_total", "Outcomes lost because the event spool was full, by kind", ["kind"])

STALE_S = 5.0  # a status older than this: the relay is not running


def relay_state(root: Path) -> tuple[dict[str, object], bool]:
    """The relay's last status and whether it is current."""
    status = read_status(root) or {}
    ts = status.get("ts")
    fresh = isinstance(ts, (int, float)) and time.time() - ts < STALE_S and not status.get("stopping")
    return status, fresh


def spool_bytes(root: Path) -> int:
    return sum(pending_bytes(d) for d in slot_dirs(root))


class RelayMetrics:
    """A collector: the relay's counters and the spool's size."""

    COUNTERS = (("published", "Events acknowledged by JetStream"),
                ("replayed", "Events published after waiting in the spool through a NATS outage or a restart"),
                ("undeliverable", "Events that can never be published (unreadable, or over NATS max_payload)"),
                ("corrupt", "Spool records skipped because their checksum failed"),
                ("chains_broken", "Batches published again with an ack per event because their chain broke"))

    def __init__(self, root: Path) -> None:
        self.root = root

    def collect(self) -> Iterator[Metric]:
        status, fresh = relay_state(self.root)
        for name, text in self.COUNTERS:
            value = status.get(name, 0)
            yield CounterMetricFamily(f"appliance_events_{name}", text, value=value if isinstance(value, int) else 0)
        yield GaugeMetricFamily("appliance_events_relay_up", "1 while the event relay reports in", value=int(fresh))
        yield GaugeMetricFamily("appliance_events_nats_connected", "1 while the relay holds a NATS connection",
                                value=int(fresh and bool(status.get("connected"))))
        yield GaugeMetricFamily("appliance_events_spool_bytes", "Bytes in the spool not yet acknowledged by JetStream",
                                value=spool_bytes(self.root))
