"""Planning a full-text query that stays fast at any corpus size, and ranks by rarity.

A question's words OR-ed together match most of a large corpus through its common words,
so every query scores most rows (docs/benchmarks.md), and PostgreSQL's `ts_rank_cd` does
not weigh a rare word above a common one. So, from the lexeme frequencies ANALYZE keeps for
the `tsv` column (`pg_stats.most_common_elems`):

- candidates are the chunks holding one of the *rarest* query lexemes: all those rarer than
  what ANALYZE lists, then listed ones rarest first while their estimated matches fit the
  candidate budget (always at least one lexeme); the store caps the rows scored anyway;
- the score is `ts_rank` (per query term, a saturating count of its occurrences, summed
  over terms: BM25's shape) with each term weighted by its IDF, ln(1 + N/df). `ts_rank`
  knows four weights, one per lexeme label A-D, so the query's lexemes are relabelled in
  the chunk's vector (`setweight`) into four IDF buckets. One expression reads the chunk's
  `tsv` once: a per-lexeme `tsv @@ x` sum would fetch the TOASTed vector once per lexeme.

Pure: the store runs the SQL this returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

MAX_LEXEMES: Final = 32  # a longer question keeps its 32 rarest lexemes


@dataclass(frozen=True, slots=True)
class LexemeStats:
    """What ANALYZE knows: frequency (fraction of rows) of the most common lexemes, the
    smallest frequency it lists (every other lexeme is rarer), and the row count."""

    frequencies: Mapping[str, float]
    floor: float
    rows: float

    @property
    def known(self) -> bool:
        return self.rows > 0 and bool(self.frequencies)

    def frequency(self, lexeme: str) -> float:
        # An unlisted lexeme is rarer than the floor; most of that tail is far rarer.
        return self.frequencies.get(lexeme, self.floor / 4)


NO_STATS: Final = LexemeStats({}, 0.0, 0.0)


LABELS: Final = ("A", "B", "C")  # D, ts_rank's default label, is the rest


@dataclass(frozen=True, slots=True)
class TextQuery:
    candidates: tuple[str, ...]                   # OR-ed in the WHERE clause (the GIN index scan)
    lexemes: tuple[str, ...]                      # all of them, OR-ed for the score
    labelled: tuple[tuple[str, ...], ...]         # lexemes relabelled A, B, C (the rarest first)
    weights: tuple[float, float, float, float]    # ts_rank's {D, C, B, A}, in (0, 1]


def tsquery_literal(lexemes: Sequence[str], op: str = " | ") -> str:
    """A tsquery's text form with each lexeme quoted, so nothing in it is an operator."""
    return op.join("'" + lex.replace("\\", "\\\\").replace("'", "''") + "'" for lex in lexemes)


def plan(lexemes: Sequence[str], stats: LexemeStats, budget_rows: int) -> TextQuery | None:
    """None when the question has no searchable lexeme (only stop words, say)."""
    unique = sorted(set(lexemes))
    if not unique:
        return None
    if not stats.known:
        kept = tuple(unique[:MAX_LEXEMES])
        return TextQuery(kept, kept, ((), (), ()), (1.0, 1.0, 1.0, 1.0))
    by_rarity = sorted(unique, key=lambda lex: (stats.frequency(lex), lex))[:MAX_LEXEMES]
    # Lexemes rarer than anything ANALYZE lists are always candidates (that is where the
    # answer usually is); listed ones join rarest first while the budget lasts.
    chosen = [lex for lex in by_rarity if lex not in stats.frequencies]
    expected = sum(stats.frequency(lex) for lex in chosen) * stats.rows
    for lex in by_rarity:
        if lex in stats.frequencies:
            rows = stats.frequencies[lex] * stats.rows
            if chosen and expected + rows > budget_rows:
                break
            chosen.append(lex)
            expected += rows
    return TextQuery(tuple(chosen), tuple(by_rarity), *_buckets(by_rarity, stats))


def _buckets(lexemes: Sequence[str], stats: LexemeStats) -> tuple[tuple[tuple[str, ...], ...],
                                                                   tuple[float, float, float, float]]:
    """Four IDF buckets by quarters of the largest IDF; each weighs its mean IDF / the largest."""
    idf = {lex: math.log1p(1.0 / max(stats.frequency(lex), 1e-9)) for lex in lexemes}
    top = max(idf.values())
    groups: list[list[str]] = [[], [], [], []]  # A, B, C, D
    for lex in lexemes:
        groups[min(3, int((1.0 - idf[lex] / top) * 4))].append(lex)
    means = [sum(idf[x] for x in g) / len(g) / top if g else 0.1 for g in groups]
    return tuple(tuple(g) for g in groups[:3]), (means[3], means[2], means[1], means[0])
