"""In-process models loaded once, on first use or by a background preload at start-up.

The gateway composes its services synchronously and without I/O; loading the ONNX model
would hold up start-up, so it happens in a thread instead. `model_id` is known at once
(files are resolved and checked when the loader is built, so a missing model is still a
start-up error); `dimensions` loads the model if nothing has yet.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from appliance.config import KnowledgeSettings
from appliance.domain.ports import RerankScore
from appliance.inference.local import LocalModels, load_local_models
from appliance.inference.model_files import embedder_files
from appliance.inference.tokenization import TextTokenizer

log = logging.getLogger(__name__)


class LocalModelsLoader:
    def __init__(self, knowledge: KnowledgeSettings) -> None:
        self.knowledge = knowledge
        self.files = embedder_files(knowledge)
        self._lock = threading.Lock()
        self._models: LocalModels | None = None
        self._preload: asyncio.Task[LocalModels] | None = None
        self._tokenizer: Tokenizer | None = None

    @property
    def tokenizer(self) -> Tokenizer:
        """The raw tokenizer (no padding/truncation), loaded on its own: chunking needs it, and
        it loads in a fraction of the model's time."""
        if self._models is not None:
            return self._models.embedder.tokenizer
        if self._tokenizer is None:
            self._tokenizer = TextTokenizer(self.files.tokenizer, self.knowledge.embed_max_seq_len).raw
        return self._tokenizer

    @property
    def loaded(self) -> bool:
        return self._models is not None

    def get(self) -> LocalModels:
        """The models, loading them in this thread if needed (blocking)."""
        with self._lock:
            if self._models is None:
                self._models = load_local_models(self.knowledge)
            return self._models

    async def aget(self) -> LocalModels:
        if self._models is not None:
            return self._models
        return await asyncio.to_thread(self.get)

    async def preload(self) -> None:
        """Start loading in the background; returns at once (for a start-up hook)."""
        if self._models is None and self._preload is None:
            self._preload = asyncio.create_task(self.aget())
            self._preload.add_done_callback(_log_failure)

    def close(self) -> None:
        with self._lock:
            if self._models is not None:
                self._models.close()
                self._models = None


def _log_failure(task: asyncio.Task[LocalModels]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("loading the in-process models failed: %s", task.exception())


class LazyEmbedder:
    """The in-process `TokenEmbedder`, loading on first use."""

    path = "local"
    dimensions: int  # looked up on first access (loads the model), see __getattr__

    def __init__(self, loader: LocalModelsLoader) -> None:
        self.loader = loader
        self.model_id = loader.files.model_id

    def __getattr__(self, name: str) -> int:
        if name == "dimensions":
            return self.loader.get().embedder.dimensions
        raise AttributeError(name)

    @property
    def tokenizer(self) -> Tokenizer:
        return self.loader.tokenizer

    @property
    def max_seq_len(self) -> int:
        return self.loader.knowledge.embed_max_seq_len

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await (await self.loader.aget()).embedder.embed(texts)

    async def count_tokens(self, texts: Sequence[str]) -> int:
        return await (await self.loader.aget()).embedder.count_tokens(texts)

    async def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        return await (await self.loader.aget()).embedder.token_vectors(texts)


class LazyReranker:
    """The configured in-process `Reranker`, loading on first use."""

    def __init__(self, loader: LocalModelsLoader) -> None:
        self.loader = loader
        knowledge = loader.knowledge
        if knowledge.rerank_kind == "maxsim" or knowledge.rerank_model_path is None:
            self.model_id = f"maxsim:{loader.files.model_id}"
        else:
            path = knowledge.rerank_model_path
            self.model_id = path.parent.name if path.stem == "model" else path.stem

    async def rerank(self, query: str, documents: Sequence[str]) -> list[RerankScore]:
        return await (await self.loader.aget()).reranker.rerank(query, documents)
