"""Token vectors for MaxSim rerank, stored small: at most `MAX_BYTES` (8 kB) per chunk
instead of ~77 kB of int8 for a 200-token chunk of a 384-dim model.

Format 2 (`chunk_token_vectors.format` = 2), little-endian:

    u16 dims D | u16 rows K | D x f16 centre | K x f16 scale | K x ceil(D/8) bytes of sign bits

- **Rows.** Token vectors that point the same way are merged first (leader clustering: a
  token whose cosine to an earlier kept row is at least `MERGE_COSINE` joins it, and the row
  becomes the normalised mean of its members): MaxSim takes the best match per query token,
  so a near-copy adds nothing. If more rows remain than fit in `MAX_BYTES`, the most
  redundant ones (highest cosine to another row) are merged into their nearest until they fit.
- **Vectors.** The chunk's mean row is kept as the centre; each row is stored as its residual
  from the centre, one sign bit per dimension, with one f16 scale (the residual's mean
  absolute value). Contextual token vectors of one chunk share a large common component, so
  the bits go to what tells the tokens apart. A row is read back as centre + scale * sign,
  renormalised.

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
MERGE_COSINE: Final = 0.9
log = logging.getLogger(__name__)
_HEADER = np.dtype([("dims", "<u2"), ("rows", "<u2")])


def _normalise(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)).astype(np.float32)
    return out


def max_rows(dims: int, budget: int = MAX_BYTES) -> int:
    return max(1, (budget - 4 - 2 * dims) // (2 + (dims + 7) // 8))


def merge(vectors: np.ndarray, cosine: float = MERGE_COSINE, limit: int | None = None) -> np.ndarray:
    """Rows of `vectors` (L2-normalised) with near-duplicates merged, at most `limit` rows."""
    if len(vectors) == 0:
        return vectors.astype(np.float32)
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
    while limit is not None and len(rows) > limit:
        s = rows @ rows.T
        np.fill_diagonal(s, -2.0)
        nearest = s.max(axis=1)
        order = np.argsort(-nearest)[: len(rows) - limit]  # the most redundant rows
        drop = set()
        for i in order.tolist():
            j = int(np.argmax(s[i]))
            if i in drop or j in drop:
                continue
            rows[j] = rows[i] + rows[j]
            drop.add(i)
        keep = [k for k in range(len(rows)) if k not in drop]
        rows = _normalise(rows[keep])
    return rows


def compact(vectors: np.ndarray) -> bytes:
    """Format 2 bytes for one chunk's token vectors (T, D), each row L2-normalised."""
    return compact_with(vectors, MERGE_COSINE)


def compact_with(vectors: np.ndarray, cosine: float) -> bytes:
    dims = int(vectors.shape[1]) if vectors.ndim == 2 else 0
    rows = merge(np.asarray(vectors, dtype=np.float32), cosine, max_rows(dims)) if dims else np.zeros((0, 0))
    header = np.array([(dims, len(rows))], dtype=_HEADER).tobytes()
    if len(rows) == 0:
        return header
    centre = rows.mean(axis=0).astype(np.float16)
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
