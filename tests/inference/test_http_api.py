"""POST /v1/embeddings and /v1/rerank on a real gateway process, through the official client;
the gateway uses a real `appliance inference` process and falls back when it is killed."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from appliance.inference.local import LocalModels
from tests import procs

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    gateway: subprocess.Popen[bytes]
    inference: subprocess.Popen[bytes]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def post(self, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, json.loads(err.read())


def _start_stack(log_dir: Path) -> Stack:
    grpc_port, health_port, port = procs.free_port(), procs.free_port(), procs.free_port()
    env = procs.child_env(APPLIANCE_KNOWLEDGE__EMBED_THREADS="1")
    inference = procs.spawn(["-m", "appliance", "inference", "--listen", f"127.0.0.1:{grpc_port}",
                             "--health-listen", f"127.0.0.1:{health_port}"], grpc_port, env=env,
                            log=log_dir / "inference.log", timeout=60)
    env = procs.child_env(APPLIANCE_KNOWLEDGE__EMBED_THREADS="1", APPLIANCE_KNOWLEDGE__EMBED_MAX_INPUTS="16",
                          APPLIANCE_INFERENCE_URL=f"grpc://127.0.0.1:{grpc_port}",
                          APPLIANCE_INFERENCE__BREAKER_COOLDOWN_S="60")
    try:
        gateway = procs.spawn(["-m", "appliance", "serve", "--port", str(port)], port, env=env,
                              log=log_dir / "gateway.log", timeout=60)
    except Exception:
        procs.stop(inference)
        raise
    return Stack(gateway, inference, port)


def _stop_stack(stack: Stack) -> None:
    procs.stop(stack.gateway)
    procs.stop(stack.inference)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = _start_stack(tmp_path_factory.mktemp("stack"))
    try:
        yield s
    finally:
        _stop_stack(s)


TEXTS = ["The cat sits on the mat.", "A cat is sitting on a rug.", "Quarterly revenue grew by five percent."]


async def test_openai_client_float_and_base64(stack: Stack, local_models: LocalModels) -> None:
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="unused")
    expected = np.array(await local_models.embedder.embed(TEXTS))
    as_float = await client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, encoding_format="float")
    assert [d.index for d in as_float.data] == [0, 1, 2]
    assert np.allclose([d.embedding for d in as_float.data], expected, atol=1e-5)
    assert as_float.model == "all-MiniLM-L6-v2"
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == await local_models.embedder.count_tokens(TEXTS)
    # The client asks for base64 by default and decodes it itself.
    default = await client.embeddings.create(model="all-MiniLM-L6-v2", input="The cat sits on the mat.")
    assert np.allclose(default.data[0].embedding, expected[0], atol=1e-6)
    raw = await client.embeddings.with_raw_response.create(model="all-MiniLM-L6-v2", input=TEXTS[:1],
                                                           encoding_format="base64")
    assert raw.headers["x-appliance-inference"] == "grpc"
    body = json.loads(raw.http_response.text)
    decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, expected[0], atol=1e-6)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m", "input": []}, "input"),
    ({"model": "m", "input": ""}, "input"),
    ({"model": "m", "input": ["x"] * 17}, "input"),          # embed_max_inputs=16
    ({"model": "m"}, "input"),
    ({"model": "m", "input": [[1, 2, 3]]}, "input"),
    ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "m", "input": "x", "dimensions": 1536}, "dimensions"),
])
def test_bad_embedding_requests_get_openai_errors(stack: Stack, body: dict[str, Any], param: str) -> None:
    status, _, payload = stack.post("/v1/embeddings", body)
    assert status == 400
    assert payload["error"]["type"] == "invalid_request_error" and payload["error"]["param"] == param
    assert payload["error"]["message"]


async def test_openai_client_raises_bad_request_for_empty_input(stack: Stack) -> None:
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model="all-MiniLM-L6-v2", input=[])


def test_rerank_cohere_shape(stack: Stack) -> None:
    docs = ["The weather in Lisbon is sunny today.",
            "To reset your password, open Settings and click 'Forgot password'.",
            {"text": "Our office is closed on public holidays."}]
    status, headers, body = stack.post("/v1/rerank", {"model": "rerank", "query": "How do I reset my password?",
                                                      "documents": docs, "top_n": 2, "return_documents": True})
    assert status == 200, body
    assert headers["x-appliance-inference"] == "grpc"
    assert body["results"][0]["index"] == 1 and len(body["results"]) == 2
    assert body["results"][0]["relevance_score"] >= body["results"][1]["relevance_score"]
    assert body["results"][0]["document"]["text"].startswith("To reset")
    status, _, body = stack.post("/v1/rerank", {"query": "q", "documents": ["a", "b"]})
    assert status == 200 and len(body["results"]) == 2 and "document" not in body["results"][0]
    status, _, body = stack.post("/v1/rerank", {"query": "q", "documents": []})
    assert status == 400 and body["error"]["param"] == "documents"


async def test_killing_inference_leaves_embeddings_answering_locally(tmp_path: Path,
                                                                    local_models: LocalModels) -> None:
    s = _start_stack(tmp_path)
    try:
        client = openai.AsyncOpenAI(base_url=s.base_url, api_key="unused", max_retries=0)
        first = await client.embeddings.with_raw_response.create(model="m", input=TEXTS)
        assert first.headers["x-appliance-inference"] == "grpc"
        s.inference.send_signal(signal.SIGKILL)
        s.inference.wait()
        expected = np.array(await local_models.embedder.embed(TEXTS))
        for _ in range(3):
            raw = await client.embeddings.with_raw_response.create(model="m", input=TEXTS)
            assert raw.headers["x-appliance-inference"] == "local"
            assert np.allclose([d.embedding for d in raw.parse().data], expected, atol=1e-5)
        with urllib.request.urlopen(f"http://127.0.0.1:{s.port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert 'appliance_inference_breaker_state{breaker="inference"} 1.0' in metrics
        assert 'appliance_inference_fallbacks_total{op="embed",reason="breaker_open"} 2.0' in metrics
        with urllib.request.urlopen(f"http://127.0.0.1:{s.port}/readyz", timeout=10) as resp:
            ready = json.loads(resp.read())
        assert ready["dependencies"]["inference"]["breaker"] == "open"
    finally:
        _stop_stack(s)
