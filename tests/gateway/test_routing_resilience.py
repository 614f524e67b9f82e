"""Routing that survives backends going away, through the official openai client: fallbacks
for JSON and streams, a replica killed under load, a dead backend's breaker opening and
closing again once it is back."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests import procs
from tests.conftest import Gateway, start_gateway


def catalog(a: int, b: int, dead: int) -> str:
    return f"""
[[backends]]
name = "a"
kind = "vllm"
base_url = "http://127.0.0.1:{a}/v1"
[[backends]]
name = "b"
kind = "vllm"
base_url = "http://127.0.0.1:{b}/v1"
[[backends]]
name = "dead"
kind = "llamacpp"
base_url = "http://127.0.0.1:{dead}/v1"
timeout_s = 2
discover = false
[[models]]
id = "coder"
backend = "dead"
upstream_id = "fake-model"
fallbacks = ["general"]
[[models]]
id = "general"
backend = "b"
upstream_id = "fake-model"
[[models]]
id = "pair"
backend = ["a", "b"]
upstream_id = "fake-model"
"""


class World:
    def __init__(self, tmp: Path) -> None:
        self.a, self.a_port = procs.start_fake_llm()
        self.b, self.b_port = procs.start_fake_llm()
        self.dead_port = procs.free_port()
        self.gw = start_gateway(tmp, catalog(self.a_port, self.b_port, self.dead_port),
                                APPLIANCE_ROUTING__BREAKER_COOLDOWN_S="1", APPLIANCE_ROUTING__BREAKER_FAILURES="2")
        self.client = openai.OpenAI(base_url=self.gw.base_url, api_key="x", max_retries=0)

    def stop(self) -> None:
        procs.stop(self.gw.proc)
        for proc in (self.a, self.b):
            procs.stop(proc)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.stop()


def ready(gw: Gateway) -> dict[str, Any]:
    with urllib.request.urlopen(f"{gw.url}/readyz", timeout=10) as resp:
        return dict(json.loads(resp.read()))


MESSAGES: Any = [{"role": "user", "content": "hi"}]


def test_a_dead_backend_falls_back_for_json_and_streams_and_says_so(world: World) -> None:
    raw = world.client.chat.completions.with_raw_response.create(model="coder", messages=MESSAGES)
    assert raw.headers["x-appliance-fallback"] == "coder -> general"
    assert raw.headers["x-appliance-backend"] == "b" and raw.parse().model == "coder"
    with world.client.chat.completions.with_streaming_response.create(
            model="coder", messages=MESSAGES, stream=True) as resp:
        assert resp.headers["x-appliance-fallback"] == "coder -> general"
        text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
    assert text.startswith("tok0")


def test_a_dead_backends_breaker_opens_and_closes_once_it_is_back(world: World) -> None:
    for _ in range(2):
        world.client.chat.completions.create(model="coder", messages=MESSAGES)
    assert ready(world.gw)["backends"]["dead"]["breaker"] == "open"
    started = time.monotonic()
    world.client.chat.completions.create(model="coder", messages=MESSAGES)
    assert time.monotonic() - started < 0.5   # skipped while open: no connection attempt
    revived, _ = procs.start_fake_llm(world.dead_port)
    try:
        deadline = time.monotonic() + 15
        while True:
            raw = world.client.chat.completions.with_raw_response.create(model="coder", messages=MESSAGES)
            if raw.headers["x-appliance-backend"] == "dead":
                break
            assert time.monotonic() < deadline, "the revived backend was never tried again"
            time.sleep(0.3)
        assert "x-appliance-fallback" not in raw.headers
        assert ready(world.gw)["backends"]["dead"]["breaker"] == "closed"
        with urllib.request.urlopen(f"{world.gw.url}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert 'appliance_backend_breaker_state{backend="dead"} 0.0' in metrics
        assert 'appliance_chat_fallbacks_total{fallback="general",model="coder"}' in metrics
    finally:
        procs.stop(revived)


def test_a_replica_killed_under_load_fails_no_request(world: World) -> None:
    failures: list[str] = []
    answered: dict[str, int] = {}
    stop = threading.Event()

    def client_loop() -> None:
        client = openai.OpenAI(base_url=world.gw.base_url, api_key="x", max_retries=0)
        while not stop.is_set():
            try:
                raw = client.chat.completions.with_raw_response.create(model="pair", messages=MESSAGES)
                backend = raw.headers["x-appliance-backend"]
                answered[backend] = answered.get(backend, 0) + 1
            except openai.APIError as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=client_loop) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    procs.stop(world.a, sig=9)  # SIGKILL one replica mid-load
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(10)
    assert failures == []
    assert answered.get("a", 0) > 0 and answered.get("b", 0) > 0
