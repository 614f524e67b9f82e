"""Prometheus metrics of the event pipeline."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PUBLISHED = Counter("appliance_events_published_total", "Events acknowledged by JetStream")
SPOOLED = Counter("appliance_events_spooled_total", "Events written to the disk spool (NATS down or slow)")
REPLAYED = Counter("appliance_events_replayed_total", "Spooled events published after NATS came back")
DROPPED = Counter("appliance_events_dropped_total", "Events lost because the spool was full")
SPOOL_BYTES = Gauge("appliance_events_spool_bytes", "Bytes in the spool not yet acknowledged",
                    multiprocess_mode="livesum")
CONNECTED = Gauge("appliance_events_nats_connected", "1 while the publisher holds a NATS connection",
                  multiprocess_mode="livemax")
