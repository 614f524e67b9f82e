"""The compact token-vector codec (`appliance/db/token_codec`, format 2) as pure functions:
the 8 kB cap, rows merged only past it, plain sign bits as written since 2026-12-01, and
rows written with a centre before that still read back."""

from __future__ import annotations

import numpy as np

from appliance.db import token_codec
from appliance.inference.maxsim import maxsim

DIMS = 384


def _rows(n: int, seed: int = 0, shared: float = 0.6) -> np.ndarray:
    """`n` unit rows sharing a common direction, as one chunk's contextual token vectors do."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(DIMS)
    v = shared * common + rng.standard_normal((n, DIMS))
    out: np.ndarray = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return out


def test_a_full_chunk_fits_in_8_kb_and_merges_only_past_the_cap() -> None:
    cap = token_codec.max_rows(DIMS)
    assert cap == 148
    for n in (1, 120, cap, 200, 256):
        data = token_codec.compact(_rows(n, seed=n))
        assert len(data) <= token_codec.MAX_BYTES
        assert token_codec.expand_compact(data).shape == (min(n, cap), DIMS)


def test_rows_under_the_cap_are_their_sign_bits() -> None:
    v = _rows(100)
    back = token_codec.expand_compact(token_codec.compact(v))
    assert np.allclose(back, np.sign(v) / np.sqrt(DIMS), atol=1e-6)


def test_maxsim_order_is_kept() -> None:
    query = _rows(8, seed=1)
    docs = [_rows(200, seed=2), np.concatenate([query[:4] + 0.3 * _rows(4, seed=3), _rows(196, seed=4)]),
            _rows(60, seed=5)]
    docs = [d / np.linalg.norm(d, axis=1, keepdims=True) for d in docs]
    full = [maxsim(query, d) for d in docs]
    small = [maxsim(query, token_codec.expand_compact(token_codec.compact(d))) for d in docs]
    assert int(np.argmax(small)) == int(np.argmax(full)) == 1


def test_rows_written_with_a_centre_still_read_back() -> None:
    v = _rows(150, seed=7)
    old = token_codec.compact_with(v, 0.9, centred=True)  # what c9bfeb1 wrote
    back = token_codec.expand_compact(old)
    assert back.shape[1] == DIMS and len(old) <= token_codec.MAX_BYTES
    assert np.allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-4)
    # each original row is near one decoded row
    assert float((v @ back.T).max(axis=1).mean()) > 0.6


def test_an_empty_chunk() -> None:
    data = token_codec.compact(np.zeros((0, DIMS), dtype=np.float32))
    assert token_codec.expand_compact(data).shape == (0, DIMS)
