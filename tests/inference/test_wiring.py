"""What `build_services` gets: lazy in-process models, or the gRPC client with fallback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.config import ConfigError, KnowledgeSettings, Settings
from appliance.inference.embedder import TokenEmbedder
from appliance.inference.fallback import FallbackEmbedder, FallbackReranker
from appliance.inference.lazy import LazyEmbedder
from appliance.inference.wiring import Inference
from appliance.openai.embeddings import encode_base64, parse_embeddings, parse_rerank
from appliance.wire.errors import WireError


async def test_local_by_default_and_lazy() -> None:
    inference = Inference(Settings())
    try:
        assert isinstance(inference.embedder, LazyEmbedder) and inference.remote is None
        assert inference.embedder.model_id == "all-MiniLM-L6-v2"
        assert inference.reranker.model_id == "maxsim:all-MiniLM-L6-v2"
        tokenizer = inference.embedder.tokenizer  # chunking needs no model
        assert tokenizer.encode("hello world", add_special_tokens=False).ids == [7592, 2088]
        assert inference.embedder.dimensions == 384  # declared by the graph: no load either
        assert await inference.embedder.count_tokens(["hello world"]) == 2
        long = "hello world " * 100  # past INLINE_COUNT_CHARS: counted in a thread, the same way
        assert await inference.embedder.count_tokens([long, long]) == 2 * len(
            tokenizer.encode(long, add_special_tokens=False).ids)
        assert not inference.loader.loaded
        await inference.start()  # in process only: preloads in the background
        for _ in range(600):
            if inference.loader.loaded:
                break
            await asyncio.sleep(0.05)
        assert inference.loader.loaded
        assert (await inference.readiness())["ok"]
    finally:
        await inference.close()


async def test_grpc_with_fallback_when_url_is_set() -> None:
    inference = Inference(Settings(inference_url="grpc://127.0.0.1:1"))
    try:
        assert isinstance(inference.embedder, FallbackEmbedder)
        assert isinstance(inference.reranker, FallbackReranker)
        embedder: TokenEmbedder = inference.embedder
        assert embedder.model_id == "all-MiniLM-L6-v2" and embedder.max_seq_len == 256
    finally:
        await inference.close()


def test_missing_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="EMBED_MODEL_PATH"):
        Inference(Settings(knowledge=KnowledgeSettings(embed_model_path=tmp_path / "none.onnx")))


def test_wire_parsing() -> None:
    assert parse_embeddings({"input": "x"}, 4).inputs == ["x"]
    assert parse_embeddings({"input": ["a", "b"], "encoding_format": "base64"}, 4).encoding_format == "base64"
    with pytest.raises(WireError):
        parse_embeddings({"input": ["a"] * 5}, 4)
    req = parse_rerank({"query": "q", "documents": ["a", {"text": "b"}], "top_n": 1}, 10)
    assert req.documents == ["a", "b"] and req.top_n == 1 and not req.return_documents
    with pytest.raises(WireError):
        parse_rerank({"query": "q", "documents": ["a"], "top_n": 0}, 10)
    assert encode_base64([1.0, -2.0]) == "AACAPwAAAMA="
