"""In-process models loaded on first use (or by a background preload at start-up), and
released again when a caller says they are no longer needed.

The gateway composes its services synchronously and without I/O; loading the ONNX model
would hold up start-up, so it happens in a thread instead. What a worker needs without a
model is answered without one: `model_id` at once (files are resolved and checked when the
loader is built, so a missing model is still a start-up error), `dimensions` from what the
ONNX graph declares, `tokenizer` and token counts from `tokenizer.json` alone (chunking and
`usage` need nothing more). So a worker that calls the host's inference service holds no
model until a call has to be served in process, and gives it back with `release`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np
from tokenizers import Tokenizer

from appliance.config import KnowledgeSettings
from appliance.domain.ports import RerankScore
from appliance.inference.executor import BoundedExecutor
from appliance.inference.model_files import embedder_files
from appliance.inference.onnx_graph import OnnxFormatError, first_output_shape

if TYPE_CHECKING:
    from appliance.inference.local import LocalModels

log = logging.getLogger(__name__)

# Counted on the event loop up to this many characters: tens of microseconds, where the
# executor's hand-off costs most of a millisecond (docs/benchmarks.md, "Models once per host").
INLINE_COUNT_CHARS: Final = 512


def declared_dimensions(model: Path) -> int | None:
    """The vector width the ONNX graph declares for its first output, or None."""
    try:
        shape = first_output_shape(model)
    except (OSError, OnnxFormatError):
        return None
    if shape and isinstance(shape[-1], int) and shape[-1] > 0:
        return shape[-1]
    return None


def _return_freed_memory() -> None:
    """Hand freed heap back to the OS: glibc otherwise keeps most of an unloaded model's
    pages resident in its arenas (docs/benchmarks.md, "Models once per host")."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class LocalModelsLoader:
    def __init__(self, knowledge: KnowledgeSettings, models_dir: Path | None = None) -> None:
        self.knowledge = knowledge
        self.models_dir = models_dir
        self.files = embedder_files(knowledge)
        self._lock = threading.Lock()        # held while loading or releasing (in a thread)
        self._use_lock = threading.Lock()    # counters only: taken on the event loop, never for long
        self._models: LocalModels | None = None
        self._preload: asyncio.Task[LocalModels] | None = None
        self._tokenizer: Tokenizer | None = None
        self._dimensions: int | None = None
        self._in_use = 0
        self._last_used = 0.0
        self._tokenize = BoundedExecutor(1, knowledge.inference_queue_max, name="tokenize")
        self.loads = 0

    @property
    def tokenizer(self) -> Tokenizer:
        """The raw tokenizer (no padding/truncation), loaded on its own: chunking needs it, and
        it loads in a fraction of the model's time."""
        models = self._models
        if models is not None:
            return models.embedder.tokenizer
        if self._tokenizer is None:
            tokenizer = Tokenizer.from_file(str(self.files.tokenizer))
            tokenizer.no_padding()
            tokenizer.no_truncation()
            self._tokenizer = tokenizer
        return self._tokenizer

    @property
    def dimensions(self) -> int:
        """The embedder's width: the loaded model's, else what its graph declares (loads the
        model only for a graph that leaves it symbolic)."""
        models = self._models
        if models is not None:
            return models.embedder.dimensions
        if self._dimensions is None:
            self._dimensions = declared_dimensions(self.files.model) or self.get().embedder.dimensions
        return self._dimensions

    @property
    def loaded(self) -> bool:
        return self._models is not None

    def get(self) -> LocalModels:
        """The models, loading them in this thread if needed (blocking)."""
        with self._lock:
            if self._models is None:
                # Imported here: onnxruntime comes with it, and only a fallback needs it.
                from appliance.inference.local import load_local_models

                self._models = load_local_models(self.knowledge, self.models_dir)
                self.loads += 1
            return self._models

    async def aget(self) -> LocalModels:
        models = self._models
        if models is not None:
            return models
        return await asyncio.to_thread(self.get)

    @contextlib.asynccontextmanager
    async def using(self) -> AsyncIterator[LocalModels]:
        """The models for one call; `release` leaves models in use alone."""
        with self._use_lock:
            self._in_use += 1
        try:
            yield await self.aget()
        finally:
            with self._use_lock:
                self._in_use -= 1
                self._last_used = time.monotonic()

    def idle_s(self) -> float:
        """Seconds since the models last served a call (0 while one runs)."""
        with self._use_lock:
            return 0.0 if self._in_use else time.monotonic() - self._last_used

    async def count_tokens(self, texts: Sequence[str]) -> int:
        """Content tokens (no special tokens, no truncation): the `usage` of a request. The
        tokenizer alone, so counting never loads the model; off the event loop unless the
        input is short enough that the thread hand-off would cost more than the counting."""
        items = list(texts)
        tokenizer = self.tokenizer
        if sum(map(len, items)) <= INLINE_COUNT_CHARS:
            return sum(len(tokenizer.encode(t, add_special_tokens=False).ids) for t in items)
        return await self._tokenize.run(
            lambda: sum(len(e.ids) for e in tokenizer.encode_batch(items, add_special_tokens=False)))

    async def preload(self) -> None:
        """Start loading in the background; returns at once (for a start-up hook)."""
        if self._models is None and self._preload is None:
            self._preload = asyncio.create_task(self.aget())
            self._preload.add_done_callback(_log_failure)

    def release(self, min_idle_s: float = 0.0) -> bool:
        """Unload the models if loaded and unused for `min_idle_s` (blocking: call in a thread).
        True when they were released."""
        with self._lock:
            with self._use_lock:
                models = self._models
                if models is None or self._in_use or time.monotonic() - self._last_used < min_idle_s:
                    return False
                self._models = None  # a call starting now loads them again
                self._preload = None  # its result holds them too
            models.close()
            del models
            _return_freed_memory()
        return True

    def close(self) -> None:
        with self._lock:
            if self._models is not None:
                self._models.close()
                self._models = None
        self._tokenize.close()


def _log_failure(task: asyncio.Task[LocalModels]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("loading the in-process models failed: %s", task.exception())


class LazyEmbedder:
    """The in-process `TokenEmbedder`, loading on first use."""

    path = "local"
    dimensions: int  # looked up on access (see __getattr__): declared by the graph, no load

    def __init__(self, loader: LocalModelsLoader) -> None:
        self.loader = loader
        self.model_id = loader.files.model_id

    def __getattr__(self, name: str) -> int:
        if name == "dimensions":
            return self.loader.dimensions
        raise AttributeError(name)

    @property
    def tokenizer(self) -> Tokenizer:
        return self.loader.tokenizer

    @property
    def max_seq_len(self) -> int:
        return self.loader.knowledge.embed_max_seq_len

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        async with self.loader.using() as models:
            return await models.embedder.embed(texts)

    async def count_tokens(self, texts: Sequence[str]) -> int:
        return await self.loader.count_tokens(texts)

    async def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        async with self.loader.using() as models:
            return await models.embedder.token_vectors(texts)

    async def embed_with_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        async with self.loader.using() as models:
            return await models.embedder.embed_with_tokens(texts)


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
        async with self.loader.using() as models:
            return await models.reranker.rerank(query, documents)


class PromptEncoderLike(Protocol):
    """What the semantic router's `PromptEncoder` port asks (domain/semantic_router.py)."""

    model_id: str

    async def encode(self, texts: Sequence[str]) -> list[list[float]]:
        ...

    async def encode_cards(self, texts: Sequence[str]) -> list[list[float]]:
        ...


class LazyPromptEncoder:
    """An in-process prompt encoder built by `load` (blocking, run in a thread) on the first
    call, for the router's fallback: a worker that reaches the host's service holds none.
    `release` drops it again, as `LocalModelsLoader.release` does the embedder."""

    def __init__(self, load: Callable[[], PromptEncoderLike], model_id: str) -> None:
        self._load = load
        self.model_id = model_id
        self._lock = threading.Lock()
        self._encoder: PromptEncoderLike | None = None

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def _get(self) -> PromptEncoderLike:
        with self._lock:
            if self._encoder is None:
                self._encoder = self._load()
            return self._encoder

    async def encode(self, texts: Sequence[str]) -> list[list[float]]:
        return await (await self._loaded()).encode(texts)

    async def encode_cards(self, texts: Sequence[str]) -> list[list[float]]:
        return await (await self._loaded()).encode_cards(texts)

    async def _loaded(self) -> PromptEncoderLike:
        encoder = self._encoder
        if encoder is None:
            encoder = await asyncio.to_thread(self._get)
        return encoder

    def release(self) -> bool:
        """Drop the encoder (blocking: call in a thread); a call running now keeps its own."""
        with self._lock:
            if self._encoder is None:
                return False
            self._encoder = None
        _return_freed_memory()
        return True
