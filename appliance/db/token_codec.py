"""Token vectors for MaxSim rerank, stored small: at most `MAX_BYTES` (8 kB) per chunk
instead of ~77 kB of int8 for a 200-token chunk of a 384-dim model.

Format 2 (`chunk_token_vectors.format` = 2), little-endian:

    u16 dims D | u16 rows K | D x f16 centre | K x f16 scale | K x ceil(D/8) bytes of sign bits

- **Rows.** One row per token while they fit; past `max_rows` (148 at 384 dims) the closest
  pair of rows is merged into their normalised mean, one pair at a time, until they fit: MaxSim
  takes each query token's best match, so the most redundant rows are the ones to lose. (Merging
  near-duplicates up front, at cosine 0.9, saved space the cap does not need and cost 0.003 MRR.)
- **Vectors.** Written since 2026-12-01 with a zero centre: a row is one sign bit per dimension
  (its scale, the row's mean absolute value, is kept but cancels when the row is renormalised).
  Rows written before that hold the chunk's mean row as the centre and each row's residual
  from it (centre + scale * sign); the reader is the same for both, so they stay as they are.
  Plain signs ranked as well as residuals around the centre on the man-page benchmark, and
  as int8 rows within one query of 150 (docs/knowledge.md, MRR@10 of hybrid + rerank).

Format 1 is the int8 rows of `rag/late_interaction.pack` before migration 0004, which adds
the `format` column; `convert` (run by `migrate` after the SQL files) rewrites them as format 2.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import numpy as np
import psycopg

FORMAT_INT8: Final = 1
FORMAT_BITS: Final = 2
MAX_BYTES: Final = 8192
MERGE_COSINE: Final[float | None] = None  # near-duplicates are merged only past the cap
log = logging.getLogger(__name__)
_HEADER = np.dtype([("dims", "<u2"), ("rows", "<u2")])


def _normalise(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)).astype(np.float32)
    return out


def max_rows(dims: int, budget: int = MAX_BYTES) -> int:
    return max(1, (budget - 4 - 2 * dims) // (2 + (dims + 7) // 8))


def merge(vectors: np.ndarray, cosine: float | None = MERGE_COSINE, limit: int | None = None) -> np.ndarray:
    """Rows of `vectors` (L2-normalised) with near-duplicates merged (cosine at least
    `cosine`; None: none), then the closest pair merged, one pair at a time, while more than
    `limit` rows remain."""
    if len(vectors) == 0:
        return vectors.astype(np.float32)
    if cosine is None:
        rows = np.array(vectors, dtype=np.float32)
    else:
        sims = vectors @ vectors.T
        leader = np.full(len(vectors), -1)
        leaders: list[int] = []
        for i in range(len(vectors)):
            if leaders:
                best = int(np.argmax(sims[i, leaders]))
                if sims[i, leaders[best]] >= cosine:
                    leader[i] = leaders[best]
                    continue
            leaders.append(i)
            leader[i] = i
        rows = _normalise(np.stack([vectors[leader == j].mean(axis=0) for j in leaders]))
    if limit is None or len(rows) <= limit:
        return rows
    # Greedy: the most redundant pair first, its merged row's cosines updated in place.
    sums = rows.astype(np.float32)
    s = rows @ rows.T
    np.fill_diagonal(s, -np.inf)
    alive = len(rows)
    while alive > limit:
        i, j = divmod(int(np.argmax(s)), len(rows))
        sums[j] += sums[i]
        rows[j] = sums[j] / max(float(np.linalg.norm(sums[j])), 1e-6)
        s[i, :] = s[:, i] = -np.inf
        col = rows @ rows[j]
        col[np.isneginf(s[:, j])] = -np.inf  # dead rows and j itself stay out
        s[:, j] = s[j, :] = col
        s[j, j] = -np.inf
        alive -= 1
    keep = ~np.all(np.isneginf(s), axis=1) if alive > 1 else np.array([k == j for k in range(len(rows))])
    return _normalise(rows[keep])


def compact(vectors: np.ndarray) -> bytes:
    """Format 2 bytes for one chunk's token vectors (T, D), each row L2-normalised."""
    return compact_with(vectors, MERGE_COSINE, centred=False)


def compact_with(vectors: np.ndarray, cosine: float | None, centred: bool) -> bytes:
    """`compact` with the choices the benchmark compares: leader merging at `cosine` (None:
    none) and a centre (the chunk's mean row) or zero."""
    dims = int(vectors.shape[1]) if vectors.ndim == 2 else 0
    rows = merge(np.asarray(vectors, dtype=np.float32), cosine, max_rows(dims)) if dims else np.zeros((0, 0))
    header = np.array([(dims, len(rows))], dtype=_HEADER).tobytes()
    if len(rows) == 0:
        return header
    centre = (rows.mean(axis=0) if centred else np.zeros(dims)).astype(np.float16)
    residual = rows - centre.astype(np.float32)
    scale = np.abs(residual).mean(axis=1).astype(np.float16)
    bits = np.packbits(residual > 0, axis=1, bitorder="little")
    body: bytes = centre.astype("<f2").tobytes() + scale.astype("<f2").tobytes() + bits.tobytes()
    return header + body


def expand_compact(data: bytes) -> np.ndarray:
    """Format 2 bytes -> (K, D) float32 rows, L2-normalised."""
    head = np.frombuffer(data, dtype=_HEADER, count=1)[0]
    dims, rows = int(head["dims"]), int(head["rows"])
    if rows == 0:
        return np.zeros((0, dims), dtype=np.float32)
    at = _HEADER.itemsize
    centre = np.frombuffer(data, dtype="<f2", count=dims, offset=at).astype(np.float32)
    at += 2 * dims
    scale = np.frombuffer(data, dtype="<f2", count=rows, offset=at).astype(np.float32)
    at += 2 * rows
    width = (dims + 7) // 8
    bits = np.frombuffer(data, dtype=np.uint8, count=rows * width, offset=at).reshape(rows, width)
    signs = np.unpackbits(bits, axis=1, count=dims, bitorder="little").astype(np.float32) * 2.0 - 1.0
    return _normalise(centre + scale[:, None] * signs)


def expand_int8(data: bytes, dims: int) -> np.ndarray:
    tokens = np.frombuffer(data, dtype=np.int8).reshape(-1, dims).astype(np.float32)
    return _normalise(tokens)


def expand(data: bytes, fmt: int, dims: int) -> np.ndarray:
    """Stored bytes of either format -> token rows (L2-normalised) for MaxSim."""
    return expand_compact(data) if fmt == FORMAT_BITS else expand_int8(data, dims)


def convert(conn: psycopg.Connection[Any], batch: int = 500) -> int:
    """Rewrite every format-1 row of chunk_token_vectors as format 2, `batch` rows per
    transaction (so a large table is not one long lock), then give the space back. Returns
    the rows converted; 0 (and no work) when there are none or the table is older than 0004."""
    has_format = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = 'chunk_token_vectors' AND column_name = 'format'").fetchone()
    meta = conn.execute("SELECT to_regclass('knowledge_meta')").fetchone()
    if not has_format or not meta or meta[0] is None:
        return 0
    row = conn.execute("SELECT value FROM knowledge_meta WHERE key = 'embedding_dim'").fetchone()
    if row is None:
        return 0
    dims = int(row[0])
    done = 0
    while True:
        with conn.transaction():
            rows = conn.execute(
                "SELECT workspace, document_id, chunk_index, vectors FROM chunk_token_vectors"
                " WHERE format = %s LIMIT %s FOR UPDATE SKIP LOCKED", (FORMAT_INT8, batch), binary=True).fetchall()
            if not rows:
                break
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE chunk_token_vectors SET vectors = %s, format = %s"
                    " WHERE workspace = %s AND document_id = %s AND chunk_index = %s",
                    [(compact(expand_int8(bytes(r[3]), dims)), FORMAT_BITS, r[0], r[1], r[2]) for r in rows])
        done += len(rows)
        log.info("token vectors converted to format 2", extra={"rows": done})
    if done:
        conn.execute("VACUUM FULL chunk_token_vectors")  # the int8 rows' space back to the disk
    return done
