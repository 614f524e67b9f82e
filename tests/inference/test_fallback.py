"""Per-call fallback and the breaker, against a real `appliance inference` process."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from appliance.config import InferenceSettings, Settings
from appliance.domain.breaker import State
from appliance.inference.breaker import inference_breaker
from appliance.inference.fallback import served_path
from appliance.inference.local import LocalModels
from appliance.inference.wiring import Inference
from tests import procs

TEXTS = ["The cat sits on the mat.", "Quarterly revenue grew by five percent."]


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_inference_breaker_reports_its_state_as_a_gauge() -> None:
    breaker = inference_breaker(30)
    breaker.failure()
    assert breaker.state is State.OPEN
    assert _metric("appliance_inference_breaker_state", breaker="inference") == 1
    breaker.success()
    assert _metric("appliance_inference_breaker_state", breaker="inference") == 0


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[int, int, object]]:
    port, health = procs.free_port(), procs.free_port()
    proc = procs.spawn(["-m", "appliance", "inference", "--listen", f"127.0.0.1:{port}",
                        "--health-listen", f"127.0.0.1:{health}"], port, log=tmp_path / "inference.log",
                       env=procs.child_env(APPLIANCE_KNOWLEDGE__EMBED_THREADS="1"), timeout=60)
    try:
        yield port, health, proc
    finally:
        procs.stop(proc)


async def test_killing_the_service_falls_back_and_opens_the_breaker(
        service: tuple[int, int, object], local_models: LocalModels) -> None:
    port, health, proc = service
    with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=5) as resp:
        assert json.loads(resp.read())["status"] == "ok"
    settings = Settings(inference_url=f"grpc://127.0.0.1:{port}",
                        inference=InferenceSettings(deadline_s=5, breaker_cooldown_s=60))
    inference = Inference(settings)
    await inference.start()
    try:
        embedder = inference.embedder
        expected = np.array(await local_models.embedder.embed(TEXTS))
        local_before = _metric("appliance_inference_calls_total", op="embed", path="local")
        open_before = _metric("appliance_inference_fallbacks_total", op="embed", reason="breaker_open")

        assert np.allclose(await embedder.embed(TEXTS), expected, atol=1e-5)
        assert served_path.get() == "grpc"
        assert (await inference.readiness())["grpc"] == "SERVING"
        scores = await inference.reranker.rerank("a cat on a mat", TEXTS)
        assert served_path.get() == "grpc" and scores[0].score > scores[1].score

        proc.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
        proc.wait()  # type: ignore[attr-defined]

        for _ in range(3):  # first call pays the failure, the next ones skip the remote
            assert np.allclose(await embedder.embed(TEXTS), expected, atol=1e-5)
            assert served_path.get() == "local"
        assert inference.breaker is not None and inference.breaker.state is State.OPEN
        assert _metric("appliance_inference_calls_total", op="embed", path="local") == local_before + 3
        assert _metric("appliance_inference_fallbacks_total", op="embed", reason="breaker_open") == open_before + 2
        assert _metric("appliance_inference_breaker_state", breaker="inference") == 1
        scores = await inference.reranker.rerank("a cat on a mat", TEXTS)
        assert served_path.get() == "local" and scores[0].score > scores[1].score
        ready = await inference.readiness()
        assert ready["ok"] and ready["breaker"] == "open" and ready["grpc"].startswith("unreachable")
    finally:
        await inference.close()


async def test_a_hung_service_costs_one_deadline_then_the_breaker_skips_it() -> None:
    # A listener that accepts and never answers: the call must end at the deadline.
    hung = socket.create_server(("127.0.0.1", 0))
    port = hung.getsockname()[1]
    settings = Settings(inference_url=f"127.0.0.1:{port}",
                        inference=InferenceSettings(deadline_s=0.3, breaker_cooldown_s=60))
    inference = Inference(settings)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await inference.embedder.embed(TEXTS)
        first = loop.time() - start
        assert served_path.get() == "local"
        start = loop.time()
        await inference.embedder.embed(TEXTS)
        second = loop.time() - start
        assert first >= 0.3 and second < 0.3
        assert _metric("appliance_inference_fallbacks_total", op="embed", reason="deadline") >= 1
    finally:
        await inference.close()
        hung.close()
