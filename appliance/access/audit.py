"""The audit trail's writer: one JSON log line per event at once, and a bounded queue that
the access sync (sync.py) writes to PostgreSQL's `audit_log` in batches, off the serving path.

A flood of denials costs a log line and a deque append each; past `max_queued` the oldest
waiting events are dropped from the table's queue (their log lines are out already), counted
and said once per flood.
"""

from __future__ import annotations

import collections
import logging

from prometheus_client import Counter

from appliance.domain.access import AuditEvent

log = logging.getLogger("appliance.audit")

AUDIT_DROPPED = Counter("appliance_audit_dropped_total",
                        "Audit events not written to PostgreSQL because the queue was full (their log lines were)")


class AuditWriter:
    """`AuditSink`: logs each event, queues it for the table (see the module docstring);
    `max_queued` 0: the log only (no PostgreSQL)."""

    def __init__(self, max_queued: int = 10_000) -> None:
        self._queue: collections.deque[AuditEvent] = collections.deque()
        self._max = max_queued
        self._dropping = False

    def record(self, event: AuditEvent) -> None:
        level = logging.WARNING if event.event == "denied" else logging.INFO
        log.log(level, f"audit: {event.event}", extra={
            "audit": event.event, "key": event.key, "status": event.status, "method": event.method,
            "path": event.path, "actor": event.actor, **({"detail": dict(event.detail)} if event.detail else {})})
        if not self._max:  # no table to write to: the log line is the trail
            return
        if len(self._queue) >= self._max:
            self._queue.popleft()
            AUDIT_DROPPED.inc()
            if not self._dropping:
                self._dropping = True
                log.warning("audit queue full: the oldest events are written to the log only",
                            extra={"max_queued": self._max})
        self._queue.append(event)

    def take(self, limit: int = 1000) -> list[AuditEvent]:
        out: list[AuditEvent] = []
        while self._queue and len(out) < limit:
            out.append(self._queue.popleft())
        if not self._queue:
            self._dropping = False
        return out

    def give_back(self, events: list[AuditEvent]) -> None:
        """A batch the table did not take goes back to the front (still bounded)."""
        room = self._max - len(self._queue)
        self._queue.extendleft(reversed(events[-room:] if room > 0 else []))

    def __len__(self) -> int:
        return len(self._queue)
