"""The semantic router's `PromptEncoder` (appliance/domain/semantic_router.py): one vector per
text from two models that ship inside PyPI packages, nothing downloaded.

    vector = [ sqrt(g) * USE(text) ; sqrt(1 - g) * e5_tokens(text) ],   g = use_weight * coverage

- `use_model.UseModel`: USE multilingual v3, a sentence encoder for 16 languages; best on
  English (and the other 15) of everything measured that fits the budget.
- `e5_tokens.E5TokenTable`: multilingual-e5-small's token vectors, 100 languages (Hindi
  among them); a weighted bag of tokens, weaker alone, but its vocabulary covers the scripts USE lacks.
- `coverage` is the share of the text's tokens USE's vocabulary knows: a Hindi prompt is
  ~40% known (spaces, digits, Latin words), so the e5 half carries most of its vector,
  while an English card or prompt is split `use_weight` : 1 - `use_weight`.

Each half is L2-normalised, so the whole is too, and the cosine of two vectors is the
weighted sum of the halves' cosines. Why two models and no transformer: docs/routing.md
(measured on this 2-core CPU, a 12-layer encoder costs 1.4 ms per token).

Long prompts are cut before tokenising (`max_chars`: three quarters from the head, one from
the tail, where the question often is), then to `use_head` + `use_tail` tokens for USE and
`e5_tokens` for the token half: the work per prompt is bounded whatever its length (a
512-token prompt costs what a 64-token one does, plus tokenising). A router's cards are
embedded once, at start, so they are read whole (`card_use_tokens`): a card's description
cut to the prompts' slice loses what it says last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np

from appliance.domain.card_scores import Block
from appliance.inference.e5_tokens import MODEL_ID as E5_ID
from appliance.inference.e5_tokens import E5TokenTable, default_model_path
from appliance.inference.executor import BoundedExecutor
from appliance.inference.use_model import MODEL_ID as USE_ID
from appliance.inference.use_model import UseModel, resources_dir


@dataclass(frozen=True, slots=True)
class EncoderLimits:
    """How much of a prompt is read, and how the halves are weighted."""

    max_chars: int = 4000
    use_head: int = 48      # USE's cost is ~linear in tokens: 48 + 16 keeps a 512-token prompt
    use_tail: int = 16      # in the budget, chosen on the labelled set's dev half (docs/routing.md)
    e5_tokens: int = 256    # ~0.5 ms for 256: token vectors are cheap
    card_use_tokens: int = 512  # cards: read whole, once
    use_weight: float = 0.5

    def __post_init__(self) -> None:
        if (self.max_chars < 16 or self.use_head < 1 or self.use_tail < 0 or self.e5_tokens < 1
                or self.card_use_tokens < 1):
            raise ValueError(f"encoder limits too small: {self}")
        if not 0.0 <= self.use_weight <= 1.0:
            raise ValueError(f"use_weight must be in [0, 1], got {self.use_weight}")


def bounded_slice(text: str, max_chars: int) -> str:
    """`text`, or its first three quarters and last quarter of `max_chars` characters."""
    if len(text) <= max_chars:
        return text
    head = max_chars * 3 // 4
    return text[:head] + "\n" + text[len(text) - (max_chars - head):]


# The vector's parts, one per model, scored apart by the router (domain/card_scores.py): USE
# is a sentence encoder (a card's nearest texts), the e5 half a bag of tokens (its centroid).
PROMPT_BLOCKS: Final = (Block(512), Block(384, nearest=False))


class PromptVectors:
    """The synchronous core: texts -> (n, 512 + 384) float32, each row L2-normalised."""

    MODEL_ID: Final = f"{USE_ID}+{E5_ID}"

    def __init__(self, use: UseModel, e5: E5TokenTable, limits: EncoderLimits) -> None:
        self.use = use
        self.e5 = e5
        self.limits = limits
        self.model_id = self.MODEL_ID
        self.dimensions = 512 + e5.dimensions
        # a decision's e5 half (below); the pool starts its thread at the first submit
        self._e5_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompt-e5")
        if self.dimensions != sum(b.size for b in PROMPT_BLOCKS):
            raise ValueError(f"prompt vectors have {self.dimensions} dimensions, not what PROMPT_BLOCKS say")

    def embed(self, texts: Sequence[str], *, cards: bool = False) -> np.ndarray:
        """Prompts (a bounded slice of each), or a router's card texts (`cards`: read whole).

        One prompt (a routing decision) has its token half made in a second thread while USE
        runs here: onnxruntime lets go of the interpreter, and on two cores a 512-token
        decision's ~2 ms of e5 work then hides behind USE's ~4.5 (the same arithmetic, the same
        vector)."""
        lim = self.limits
        head, tail = (lim.card_use_tokens, 0) if cards else (lim.use_head, lim.use_tail)
        cuts = [bounded_slice(text, lim.max_chars) for text in texts]
        beside = self._e5_thread.submit(self._e5_rows, cuts) if len(cuts) == 1 and not cards else None
        use_ids: list[list[int]] = []
        gates: list[float] = []
        for cut in cuts:
            ids, coverage = self.use.ids(cut, head, tail)
            use_ids.append(ids)
            gates.append(lim.use_weight * coverage)
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        use_vecs = self.use.embed_ids(use_ids)
        e5_rows = beside.result() if beside is not None else self._e5_rows(cuts)
        for row, (gate, ids) in enumerate(zip(gates, use_ids, strict=True)):
            if ids:
                out[row, :512] = math.sqrt(gate) * use_vecs[row]
            out[row, 512:] = math.sqrt(1.0 - gate) * e5_rows[row]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        result: np.ndarray = out / np.maximum(norms, 1e-12)
        return result

    def _e5_rows(self, cuts: Sequence[str]) -> list[np.ndarray]:
        return [self.e5.embed_ids(self.e5.ids(cut, self.limits.e5_tokens)) for cut in cuts]


def load_prompt_vectors(limits: EncoderLimits | None = None, e5_model: Path | None = None,
                        use_resources: Path | None = None,
                        use_runtime: Literal["onnx", "numpy"] = "onnx") -> PromptVectors:
    """Load both models (blocking, ~1 s; call before serving or in a thread). Raises
    `ModelFilesMissing` naming the package to install. `use_runtime`: USE in onnxruntime
    with its 8-bit weights (`use_onnx.py`, falls back to numpy by itself) or numpy."""
    e5 = E5TokenTable(e5_model or default_model_path())
    use = UseModel(use_resources or resources_dir(), runtime=use_runtime)
    return PromptVectors(use, e5, limits or EncoderLimits())


class LocalPromptEncoder:
    """The `PromptEncoder` port over `PromptVectors`, in this process.

    Give it an executor (`BoundedExecutor`, one worker) in a serving process: measured on
    this busy 2-core host (docs/routing.md), a decision in a thread took 0-2 ms longer at the
    median than inline, but inline ones held the event loop for 11-12 ms at p99 (every other
    request on the worker waits that long) against 2-5 ms from a thread (tokenizers and BLAS
    release the GIL). `executor=None` runs inline: for tools, tests and a dedicated process.
    """

    def __init__(self, vectors: PromptVectors, executor: BoundedExecutor | None = None) -> None:
        self.vectors = vectors
        self.executor = executor
        self.model_id = vectors.model_id
        self.dimensions = vectors.dimensions

    async def encode(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalised vectors, one per prompt, in input order."""
        return await self._run(list(texts), cards=False)

    async def encode_cards(self, texts: Sequence[str]) -> list[list[float]]:
        """The same for a router's card texts, each read whole."""
        return await self._run(list(texts), cards=True)

    async def _run(self, items: list[str], *, cards: bool) -> list[list[float]]:
        if self.executor is None:
            array = self.vectors.embed(items, cards=cards)
        else:
            array = await self.executor.run(lambda: self.vectors.embed(items, cards=cards))
        return array.tolist()  # type: ignore[no-any-return]

    async def warm(self) -> None:
        """One call, so the first prompt does not pay for lazily built state."""
        await self.encode(["warm up"])
