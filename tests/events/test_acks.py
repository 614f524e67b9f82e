"""Publishing to JetStream in chains: one ack per batch and stream when nothing got in the
way, and every event stored exactly once when something did (real NATS)."""
# A chain broken in the middle (a message lost in a reconnection) is what the pipeline's
# NATS-restart tests go through (test_pipeline.py).

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appliance.events.acks import AckTracker, Message
from appliance.events.streams import connect, ensure_streams, stream_of


def batch(start: int, n: int) -> list[Message]:
    """Chat-like traffic: a pipeline and a telemetry event per request."""
    out: list[Message] = []
    for i in range(start, start + n):
        out.append(("pipeline.knowledge.chat.persist", f"req-{i}:persist", b'{"i": %d}' % i))
        out.append(("telemetry.knowledge.chat", f"req-{i}:telemetry", b'{"i": %d}' % i))
    return out


class Setup:
    def __init__(self, nc: Any, tracker: AckTracker, acks_seen: list[str]) -> None:
        self.nc, self.tracker, self.acks_seen = nc, tracker, acks_seen

    async def acks_counted(self) -> int:
        """Acks seen so far, once the counting subscription has caught up with the socket."""
        await self.nc.flush()
        seen = -1
        while seen != len(self.acks_seen):
            seen = len(self.acks_seen)
            await asyncio.sleep(0.05)
        return seen

    async def stored(self, stream: str) -> list[str]:
        """The Nats-Msg-Id of every message in `stream`, in order."""
        js = self.nc.jetstream()
        info = await js.stream_info(stream)
        ids = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            ids.append(msg.headers["Nats-Msg-Id"])
        return ids


@pytest.fixture
async def setup(nats_server: Any) -> Any:
    nc = await connect(nats_server.url, name="test")
    await ensure_streams(nc.jetstream(), 600)
    acks_seen: list[str] = []

    async def count(msg: Any) -> None:
        acks_seen.append(msg.subject)
    await nc.subscribe("_APPL_ACK.>", cb=count)
    tracker = AckTracker(nc, stream_of)
    await tracker.start()
    yield Setup(nc, tracker, acks_seen)
    await tracker.stop()
    await nc.close()


async def test_after_the_first_batch_a_batch_costs_one_ack_per_stream(setup: Setup) -> None:
    assert await setup.tracker.publish(batch(0, 100), 5) == []
    first = await setup.acks_counted()

    assert await setup.tracker.publish(batch(100, 100), 5) == []

    assert first == 200  # the first batch learns where the streams are
    assert await setup.acks_counted() - first == 2
    assert await setup.stored("PIPELINE") == [f"req-{i}:persist" for i in range(200)]
    assert await setup.stored("TELEMETRY") == [f"req-{i}:telemetry" for i in range(200)]
    assert setup.tracker.chains_broken == 0


async def test_another_publisher_in_between_breaks_the_chain_and_nothing_is_lost(setup: Setup) -> None:
    # Its message has an id of its own: the first of ours no longer follows the last of ours.
    await setup.tracker.publish(batch(0, 10), 5)
    await setup.nc.jetstream().publish("pipeline.knowledge.chat.persist", b"{}", headers={"Nats-Msg-Id": "other"})

    assert await setup.tracker.publish(batch(10, 10), 5) == []
    assert await setup.tracker.publish(batch(20, 10), 5) == []

    assert setup.tracker.chains_broken == 1
    assert await setup.stored("PIPELINE") == [*(f"req-{i}:persist" for i in range(10)), "other",
                                              *(f"req-{i}:persist" for i in range(10, 30))]
    assert await setup.stored("TELEMETRY") == [f"req-{i}:telemetry" for i in range(30)]


async def test_a_republished_batch_chains_through_its_duplicates_and_stores_each_event_once(setup: Setup) -> None:
    await setup.tracker.publish(batch(0, 10), 5)
    await setup.tracker.publish(batch(10, 10), 5)

    assert await setup.tracker.publish(batch(5, 20), 5) == []  # 5..19 again, 20..24 new

    assert setup.tracker.chains_broken == 0  # JetStream drops 5..19 as duplicates: they are there
    assert await setup.stored("PIPELINE") == [f"req-{i}:persist" for i in range(25)]
    assert await setup.stored("TELEMETRY") == [f"req-{i}:telemetry" for i in range(25)]
