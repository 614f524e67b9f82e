"""The private surface of nats-py that appliance/events/nats_private.py uses is still there,
still called the same way and still does the same thing (real NATS). When one of these fails
after an upgrade, read nats_private.py against the new nats-py before moving the pin."""

from __future__ import annotations

import asyncio
import inspect
import re
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from appliance.events.acks import hpub_frame
from appliance.events.nats_private import FrameWriter
from appliance.events.streams import connect
from tests.pins import check_pin
from tests.procs import ROOT

ADAPTER = "appliance/events/nats_private.py"
# What nats_private.py calls: Client coroutine -> its parameters (and the defaults we rely on).
USED = {"_send_command": {"self": inspect.Parameter.empty, "cmd": inspect.Parameter.empty, "priority": False},
        "_flush_pending": {"self": inspect.Parameter.empty, "force_flush": False}}


def test_nats_py_is_the_pinned_version() -> None:
    check_pin("nats-py", ADAPTER)


@pytest.mark.parametrize("name", USED)
def test_the_private_coroutines_take_what_we_pass(name: str) -> None:
    installed = check_pin("nats-py", ADAPTER)
    method = getattr(Client, name, None)
    assert method is not None, f"nats-py {installed}: Client.{name} is gone ({ADAPTER} calls it)"
    assert inspect.iscoroutinefunction(method), f"nats-py {installed}: Client.{name} is no longer a coroutine function"
    found = {p.name: p.default for p in inspect.signature(method).parameters.values()}
    assert found == USED[name], f"nats-py {installed}: Client.{name} takes {found} now, {ADAPTER} expects {USED[name]}"


def test_nothing_else_touches_the_private_surface() -> None:
    private = re.compile(r"\._(send_command|flush_pending|nuid)\b")
    touching = [str(path.relative_to(ROOT)) for path in (ROOT / "appliance").rglob("*.py")
                if private.search(path.read_text()) and path.relative_to(ROOT).as_posix() != ADAPTER]
    assert touching == [], f"nats-py's private surface belongs in {ADAPTER} alone"


async def test_written_frames_reach_a_subscriber_in_order_without_another_flush(nats_server: Any) -> None:
    writer = await connect(nats_server.url, name="writer")
    reader = await nats.connect(nats_server.url)
    got: list[Msg] = []
    both = asyncio.Event()

    async def on(msg: Msg) -> None:
        got.append(msg)
        if len(got) == 2:
            both.set()
    try:
        await reader.subscribe("appliance.test.frames", cb=on)
        await reader.flush()
        # One round trip on the writer's connection after the subscription exists. Without it,
        # on a loaded box the server dropped a brand-new connection's first frames now and then
        # (2-3 of 40 tries, none of 80 with it; the same frames sent again arrived): a quirk of
        # the first instants of a connection, not of FrameWriter, and what it checks is that
        # write() needs no flush *after* it.
        await writer.flush()

        await FrameWriter(writer).write(hpub_frame("appliance.test.frames", "", "id-1", b"first")
                                        + hpub_frame("appliance.test.frames", "the.reply", "id-2", b"second", "id-1"))

        # Handed to the socket within a few turns of the loop: nats-server pings a new client
        # about 2 s after it connects, and the client's answer would flush the frames too; a few
        # turns after write() only _flush_pending() can have. (No wall-clock window: a loaded
        # 2-core CI box once took over a second to deliver them.)
        for _ in range(20):
            if writer._pending_data_size == 0:
                break
            await asyncio.sleep(0)
        assert writer._pending_data_size == 0, ("frames queued with Client._send_command were still "
                                                "pending after Client._flush_pending()")
        try:
            await asyncio.wait_for(both.wait(), 30)
        except TimeoutError:
            raise AssertionError(f"frames written to the socket did not reach a subscriber "
                                 f"({len(got)} of 2 arrived)") from None
        assert [(m.data, m.reply, m.headers) for m in got] == [
            (b"first", "", {"Nats-Msg-Id": "id-1"}),
            (b"second", "the.reply", {"Nats-Msg-Id": "id-2", "Nats-Expected-Last-Msg-Id": "id-1"})]
        assert writer.is_connected  # the frames were well formed: the server kept the connection
    finally:
        await writer.close()
        await reader.close()
