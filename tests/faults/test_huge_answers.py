"""A 100 MiB answer from a backend: one JSON body (chunked, or with its Content-Length), or one
SSE line. The gateway stops past its bound (`upstream_max_body_bytes` 32 MiB,
`upstream_max_event_bytes` 8 MiB): a 502 in the dialect's shape for JSON, the dialect's error
frame for a stream whose head has gone out. It closes the backend connection instead of reading
the rest, its worker's RSS does not grow by the answer's size, and it keeps serving. Numbers
are printed (`-s`) for docs/faults.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from appliance.backends.openai_compat import HttpPool, OpenAICompatBackend, UpstreamLimits
from appliance.domain.errors import BackendUnavailable
from appliance.domain.ports import Capabilities
from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway
from tests.faults.test_upstream_matrix import DIALECTS, call, error_shape, last_frame_error
from tests.perf.bench_gateway import rss_mb

MIB = 1024 * 1024
HUGE = 100 * MIB
BODY_BOUND, EVENT_BOUND = 32 * MIB, 8 * MIB   # the settings' defaults


@pytest.fixture(scope="module")
def gw(fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(tmp_path_factory.mktemp("huge"), catalog_for(fake_llm.port),
                      APPLIANCE_ROUTING__BREAKER_FAILURES="1000")  # every case reaches the backend
    try:
        call(g, *DIALECTS["openai"])  # what a first chat loads is not the answer's cost
        yield g
    finally:
        procs.stop(g.proc)


class PeakRSS:
    """The gateway tree's RSS sampled every 20 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self.before = self.peak = rss_mb(pid)
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb(self._pid))

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> float:
        return self.peak - self.before


def _upstream_dropped(llm: FakeLLM) -> bool:
    """The backend saw its connection closed before the answer's end (its write failed)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = llm.stats()
        if stats["cancelled"] == 1:
            return stats["completed"] == 0
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_a_huge_json_answer_is_a_502_and_never_held_whole(gw: Gateway, llm: FakeLLM, dialect: str,
                                                           declared: bool) -> None:
    path, body = DIALECTS[dialect]
    llm.control(huge_bytes=HUGE, huge_declared=declared)  # Anthropic and Ollama bodies drop unknown fields
    try:
        with PeakRSS(gw.proc.pid) as rss:
            status, _, raw = call(gw, path, {**body, "stream": False})
    finally:
        llm.control()
    print(f"\nhuge JSON ({dialect}, {'declared' if declared else 'chunked'}): {status}, "
          f"worker RSS +{rss.growth:.1f} MiB for a {HUGE // MIB} MiB answer")
    assert status == 502, raw[:300]
    assert "upstream_max_body_bytes" in error_shape(dialect, raw)
    assert rss.growth < 2 * BODY_BOUND / MIB + 16, rss.growth   # the bound, not the answer
    assert _upstream_dropped(llm), llm.stats()
    assert call(gw, *DIALECTS[dialect])[0] == 200


@pytest.mark.slow
@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_a_huge_stream_line_ends_the_stream_with_an_error_frame(gw: Gateway, llm: FakeLLM, dialect: str) -> None:
    path, body = DIALECTS[dialect]
    llm.control(huge_bytes=HUGE)
    try:
        with PeakRSS(gw.proc.pid) as rss:
            status, _, raw = call(gw, path, {**body, "stream": True})
    finally:
        llm.control()
    print(f"\nhuge SSE line ({dialect}): {status}, worker RSS +{rss.growth:.1f} MiB for a {HUGE // MIB} MiB line")
    assert status == 200  # the head went out with the first event
    error = last_frame_error(dialect, raw)
    assert error is not None and "upstream_max_event_bytes" in error, raw[-300:]
    assert rss.growth < 2 * EVENT_BOUND / MIB + 16, rss.growth
    assert _upstream_dropped(llm), llm.stats()
    assert call(gw, *DIALECTS[dialect])[0] == 200


async def test_the_backend_holds_to_the_limits_it_is_given(llm: FakeLLM) -> None:
    """The adapter alone, with small limits: what `Settings.upstream_*` hand it."""
    pool = HttpPool(max_connections=2, limits=UpstreamLimits(max_body_bytes=MIB, max_event_bytes=64 * 1024,
                                                             socket_buffer_bytes=64 * 1024))
    await pool.start()
    backend = OpenAICompatBackend("fake", llm.base_url, pool, capabilities=Capabilities())
    chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    try:
        assert (await backend.complete(chat)).body["choices"]  # a normal answer passes
        with pytest.raises(BackendUnavailable, match=f"more than {MIB} bytes"):
            await backend.complete({**chat, "fake": {"huge_bytes": 16 * MIB}})
        stream = await backend.open_stream({**chat, "stream": True, "fake": {"huge_bytes": 16 * MIB}})
        events: list[bytes] = []
        with pytest.raises(BackendUnavailable, match="stream event of more than 65536 bytes"):
            async for data in stream:
                events.append(data)
        await stream.aclose()
        assert len(events) == 1  # the first event came through; the huge one ended the stream
    finally:
        await pool.close()
    assert llm.stats()["completed"] == 0  # neither answer was read to its end


def test_the_upstream_limits_are_the_operators_settings(fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory,
                                                        llm: FakeLLM) -> None:
    small = start_gateway(tmp_path_factory.mktemp("small-limits"), catalog_for(fake_llm.port),
                          APPLIANCE_UPSTREAM_MAX_BODY_BYTES=str(1 << 20), APPLIANCE_UPSTREAM_MAX_EVENT_BYTES=str(64 << 10))
    try:
        path, body = DIALECTS["openai"]
        llm.control(huge_bytes=2 << 20)
        status, _, raw = call(small, path, body)
        assert status == 502 and error_shape("openai", raw)
        llm.control(pad_bytes=128 << 10)
        status, _, raw = call(small, path, {**body, "stream": True})
        assert status == 200 and last_frame_error("openai", raw)
    finally:
        llm.control()
        procs.stop(small.proc)
