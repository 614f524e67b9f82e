"""An ONNX cross-encoder reranker (e.g. an ms-marco MiniLM export) named in settings.

Each (query, document) pair is encoded as [CLS] query [SEP] document [SEP]; the model's
first output is a logit per pair (or two, relevant being the last). The score is the
sigmoid of that logit, so it lies in (0, 1) like Cohere's `relevance_score`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from appliance.domain.ports import RerankScore
from appliance.inference.executor import BoundedExecutor
from appliance.inference.session import EncoderSession
from appliance.inference.tokenization import TextTokenizer


class CrossEncoderScorer:
    """Synchronous core, shared by the in-process reranker and the gRPC server."""

    def __init__(self, session: EncoderSession, tokenizer: TextTokenizer, batch_size: int) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def scores(self, query: str, documents: Sequence[str]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(documents), self.batch_size):
            batch = self.tokenizer.pair_batch(query, documents[start:start + self.batch_size])
            logits = self.session.run(batch.input_ids, batch.attention_mask, batch.token_type_ids)
            logit = logits.reshape(logits.shape[0], -1)[:, -1]
            out.extend((1.0 / (1.0 + np.exp(-logit))).tolist())
        return out


class CrossEncoderReranker:
    def __init__(self, scorer: CrossEncoderScorer, executor: BoundedExecutor, model_id: str) -> None:
        self.scorer = scorer
        self.executor = executor
        self.model_id = model_id

    async def rerank(self, query: str, documents: Sequence[str]) -> list[RerankScore]:
        if not documents:
            return []
        docs = list(documents)
        scores = await self.executor.run(lambda: self.scorer.scores(query, docs))
        return [RerankScore(index=i, score=s) for i, s in enumerate(scores)]
