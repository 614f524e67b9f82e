"""Build the in-process models from settings: embedder, reranker, and their shared executor.

`appliance serve`/`up` (through `build_services`) and `appliance inference` both call
`load_local_models`, so the gateway's fallback path and the gRPC service run the same
files with the same settings.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config import KnowledgeSettings
from appliance.domain.ports import Reranker
from appliance.inference.cross_encoder import CrossEncoderReranker, CrossEncoderScorer
from appliance.inference.embedder import OnnxEmbedder
from appliance.inference.encoder import TextEncoder
from appliance.inference.executor import BoundedExecutor
from appliance.inference.int8_matmul import DerivationFailed, int8_copy
from appliance.inference.maxsim import MaxSimReranker
from appliance.inference.model_files import (
    ModelFiles,
    ModelFilesMissing,
    embedder_files,
    tokenizer_beside,
)
from appliance.inference.session import EncoderSession, ModelLoadError, open_session
from appliance.inference.tokenization import TextTokenizer

log = logging.getLogger(__name__)


@dataclass
class LocalModels:
    embedder: OnnxEmbedder
    reranker: Reranker
    executor: BoundedExecutor
    cross_encoder: CrossEncoderScorer | None = None
    rerank_encoder: TextEncoder | None = None   # a ColBERT model's encoder, when configured
    closed: bool = field(default=False)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.executor.close()


def _embedder_session(files: ModelFiles, knowledge: KnowledgeSettings, models_dir: Path | None) -> EncoderSession:
    """The packaged model's session, or with `embed_int8` its 8-bit copy's. When the copy
    cannot be made or run here, one warning and the packaged model: embeddings still work,
    at float32 speed."""
    if knowledge.embed_int8:
        cache = models_dir or knowledge.model_cache_dir or Path(tempfile.gettempdir()) / "appliance-models"
        try:
            return open_session(int8_copy(files.model, cache.expanduser()), knowledge.embed_threads)
        except (DerivationFailed, ModelLoadError, OSError) as exc:
            log.warning("embed_int8: no 8-bit copy of %s (%s); embedding with it as it is", files.model, exc)
    return open_session(files.model, knowledge.embed_threads, files.fp32_model)


def load_local_models(knowledge: KnowledgeSettings, models_dir: Path | None = None) -> LocalModels:
    """Load the embedder and the configured reranker (blocking: call before serving or in a
    thread). Raises `ModelFilesMissing` or `ModelLoadError` with a one-line message.
    `models_dir`: where derived models are kept (`Settings.models_dir`; tools and tests
    without a state dir leave it to `model_cache_dir`, else a temporary directory)."""
    files = embedder_files(knowledge)
    session = _embedder_session(files, knowledge, models_dir)
    tokenizer = TextTokenizer(files.tokenizer, knowledge.embed_max_seq_len)
    encoder = TextEncoder(session, tokenizer, knowledge.embed_batch_size)
    executor = BoundedExecutor(knowledge.inference_workers, knowledge.inference_queue_max)
    embedder = OnnxEmbedder(encoder, executor, files.model_id)
    log.info("embedder %s loaded from %s (%d dims, threads=%s)", files.model_id, session.path,
             encoder.dimensions, knowledge.embed_threads or "auto")

    if knowledge.rerank_kind == "maxsim":
        reranker = MaxSimReranker(embedder, doc_max_tokens=knowledge.rerank_doc_max_tokens,
                                  cache_entries=knowledge.rerank_cache_entries)
        return LocalModels(embedder, reranker, executor)
    if knowledge.rerank_model_path is None:
        raise ModelFilesMissing(f"rerank_kind={knowledge.rerank_kind} needs "
                                "APPLIANCE_KNOWLEDGE__RERANK_MODEL_PATH")
    path = knowledge.rerank_model_path.expanduser()
    if not path.is_file():
        raise ModelFilesMissing(f"rerank model not found at {path} (APPLIANCE_KNOWLEDGE__RERANK_MODEL_PATH)")
    rerank_tok = TextTokenizer(
        tokenizer_beside(path, knowledge.rerank_tokenizer_path, "RERANK_TOKENIZER_PATH"),
        knowledge.embed_max_seq_len)
    rerank_session = open_session(path, knowledge.embed_threads)
    model_id = path.parent.name if path.stem == "model" else path.stem
    log.info("reranker %s (%s) loaded from %s", model_id, knowledge.rerank_kind, path)
    if knowledge.rerank_kind == "cross-encoder":
        scorer = CrossEncoderScorer(rerank_session, rerank_tok, knowledge.embed_batch_size)
        return LocalModels(embedder, CrossEncoderReranker(scorer, executor, model_id), executor,
                           cross_encoder=scorer)
    colbert = TextEncoder(rerank_session, rerank_tok, knowledge.embed_batch_size)
    reranker = MaxSimReranker(OnnxEmbedder(colbert, executor, model_id),
                              doc_max_tokens=knowledge.rerank_doc_max_tokens,
                              cache_entries=knowledge.rerank_cache_entries)
    return LocalModels(embedder, reranker, executor, rerank_encoder=colbert)
