"""Keyword search on PostgreSQL: BM25-style scores over a ``tsvector`` GIN index that stay fast at 10^6 notes.

Two costs dominate a naive ``tsv @@ (a | b | c)`` ranked query on a large table, and both are avoided here:

- **Document frequencies.** Counting a common term's notes visits every one of them. Terms that
  ``ANALYZE`` lists among the column's most common elements take their share from ``pg_stats`` instead;
  only rarer terms are counted, and counting them is cheap because they are rare.
- **Scoring every match.** A note that contains only common terms rarely makes the top k. The search first
  scores the notes that contain the rarest terms, takes the k-th score as a bar, and then asks the index
  only for notes whose terms could still reach that bar (every minimal set of the remaining terms whose
  weights add up to it, as an OR of ANDs). The result is the same top k as scoring every match, in the
  same order; the GIN index does the pruning, and the heap visits only the few candidates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..text import query_words

#: text search configuration of the ``tsv`` column: English stemming, stop words kept (queries drop them)
TS_CONFIG = "amem.amem_english"
#: pg_stats is read again after this many seconds (and after this process runs ANALYZE)
STATS_TTL_S = 60.0
#: at most this many term sets in the pruned candidate query; beyond, every match is scored
MAX_COVERS = 48
#: notes the first, essential terms may match before the search stops adding terms to them
CHEAP_ROWS = 2000

Rows = Callable[[str, Sequence[Any]], list[dict[str, Any]]]


def tsquery_term(lexeme: str) -> str:
    """One lexeme as a quoted tsquery operand: any text is data, never tsquery syntax."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def any_of(lexemes: Sequence[str]) -> str:
    return " | ".join(tsquery_term(lex) for lex in lexemes)


def minimal_covers(weights: Sequence[float], bar: float, cap: int = MAX_COVERS) -> list[list[int]] | None:
    """Every minimal set of indexes whose weights add up to at least ``bar`` (weights sorted descending),
    or None when there are more than ``cap``. A note holding none of these sets scores below the bar."""
    covers: list[list[int]] = []
    suffix = [0.0] * (len(weights) + 1)
    for i in range(len(weights) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + weights[i]

    def walk(start: int, chosen: list[int], total: float) -> bool:
        for i in range(start, len(weights)):
            if total + suffix[i] < bar:
                return True  # the rest cannot reach the bar
            if total + weights[i] >= bar:
                covers.append([*chosen, i])  # minimal: weights descend, so dropping any one falls short
                if len(covers) > cap:
                    return False
            elif not walk(i + 1, [*chosen, i], total + weights[i]):
                return False
        return True

    return covers if walk(0, [], 0.0) else None


@dataclass
class CommonTerms:
    """The column's most common lexemes and the share of rows holding each, from pg_stats."""

    shares: dict[str, float] = field(default_factory=dict)
    read_at: float = -math.inf


class KeywordSearch:
    """Keyword search for one PostgreSQL store; ``rows`` runs a statement on the store's connection."""

    def __init__(self, rows: Rows) -> None:
        self._rows = rows
        self._common = CommonTerms()
        self.prune = True  # False scores every match (the tests compare both)
        self.cheap_rows = CHEAP_ROWS
        self.stats_from = 10_000  # below this many notes every frequency is counted
        self.last_plan = ""  # how the last search chose its candidates: all, essential or covers

    def forget_statistics(self) -> None:
        self._common = CommonTerms()

    def lexemes(self, query: str) -> list[str]:
        words = query_words(query)
        if not words:
            return []
        rows = self._rows(
            f"SELECT lexeme FROM unnest(to_tsvector('{TS_CONFIG}', %s)) ORDER BY positions[1] LIMIT 64",
            (" ".join(words),),
        )
        return [r["lexeme"] for r in rows]  # in the query's order

    def _common_terms(self) -> dict[str, float]:
        if time.monotonic() - self._common.read_at > STATS_TTL_S:
            rows = self._rows(
                "SELECT most_common_elems::text::text[] AS elems, most_common_elem_freqs AS freqs "
                "FROM pg_stats WHERE schemaname = 'amem' AND tablename = 'notes' AND attname = 'tsv'",
                (),
            )
            shares: dict[str, float] = {}
            if rows and rows[0]["elems"]:
                elems, freqs = rows[0]["elems"], rows[0]["freqs"]
                shares = {e: float(f) for e, f in zip(elems, freqs[: len(elems)], strict=True)}
            self._common = CommonTerms(shares, time.monotonic())
        return self._common.shares

    def frequencies(
        self, lexemes: Sequence[str], total: int, cap: int, user: str | None = None
    ) -> dict[str, int]:
        """Notes holding each lexeme (up to ``cap + 1``): estimated from pg_stats for common lexemes on a
        large table, counted for the rest; with ``user``, counted among that user's notes only (pg_stats
        describes the whole table, every tenant together)."""
        common = self._common_terms() if total >= self.stats_from and user is None else {}
        mine, who = (" AND user_id = %s", [user]) if user is not None else ("", [])
        df: dict[str, int] = {}
        for lex in lexemes:
            if lex in common:
                df[lex] = min(cap + 1, total, max(1, round(common[lex] * total)))
                continue
            counted = self._rows(
                f"SELECT count(*) AS c FROM (SELECT 1 FROM notes WHERE tsv @@ %s::tsquery{mine} LIMIT %s) s",
                [tsquery_term(lex), *who, cap + 1],
            )
            df[lex] = int(counted[0]["c"])
        return df

    def user_counts(self, lexemes: Sequence[str], user: str) -> tuple[int, dict[str, int]]:
        """The user's notes, and how many hold each lexeme: one statement (on Citus, one shard's)."""
        parts = ["(SELECT count(*) FROM notes WHERE user_id = %s) AS total"]
        params: list[Any] = [user]
        for i, lex in enumerate(lexemes):
            parts.append(f"(SELECT count(*) FROM notes WHERE user_id = %s AND tsv @@ %s::tsquery) AS d{i}")
            params += [user, tsquery_term(lex)]
        row = self._rows("SELECT " + ", ".join(parts), params)[0]
        return int(row["total"]), {lex: int(row[f"d{i}"]) for i, lex in enumerate(lexemes)}

    def search(
        self,
        query: str,
        k: int,
        total: int | None,
        share: float,
        where: tuple[list[str], list[Any]],
        user: str | None = None,
    ) -> list[tuple[str, float]]:
        """The top ``k`` notes by BM25 (binary term frequency: the sum of the idf of the terms a note
        holds), ties broken by ts_rank, then age. ``where`` holds the scope and filter clauses. With
        ``user``, the notes counted and the document frequencies are that user's alone (``total`` None:
        counted here, in the same statement as the frequencies)."""
        lexemes = self.lexemes(query)
        if not lexemes or k <= 0:
            return []
        if user is not None and total is None:
            total, df = self.user_counts(lexemes, user)
            total = max(1, total)
            cap = int(total * share) if total >= 100 else total
        else:
            total = max(1, total or 0)
            cap = int(total * share) if total >= 100 else total
            df = self.frequencies(lexemes, total, cap, user)
        # the same rule as SQLite: terms in more than the share of notes go when rarer ones remain
        kept = [lex for lex in lexemes if df[lex] <= cap] or lexemes
        kept = sorted((lex for lex in kept if df[lex] > 0), key=lambda lex: df[lex])  # rarest first
        if not kept:
            return []
        idf = [math.log(1.0 + (total - df[lex] + 0.5) / (df[lex] + 0.5)) for lex in kept]
        clauses, params = where

        def top(candidates: str) -> list[tuple[str, float]]:
            scores = " + ".join(["CASE WHEN n.tsv @@ %s::tsquery THEN %s ELSE 0 END"] * len(kept))
            score_params = [p for lex, w in zip(kept, idf, strict=True) for p in (tsquery_term(lex), w)]
            sql_where = " AND ".join(["n.tsv @@ %s::tsquery", *clauses])
            rows = self._rows(
                f"""SELECT n.id, ({scores}) AS score FROM notes n WHERE {sql_where}
                    ORDER BY score DESC, ts_rank(n.tsv, %s::tsquery, 1) DESC, n.rid LIMIT %s""",
                [*score_params, candidates, *params, any_of(kept), k],
            )
            return [(r["id"], float(r["score"])) for r in rows]

        self.last_plan = "all"
        if not self.prune:
            return top(any_of(kept))
        # the essential terms: the rarest, while they are cheap to score, and at least enough for k notes
        essential, matched = 0, 0
        while essential < len(kept) and (matched < k or matched + df[kept[essential]] <= self.cheap_rows):
            matched += df[kept[essential]]
            essential += 1
        while True:
            found = top(any_of(kept[:essential]))
            if essential == len(kept):
                return found  # every term was essential: every match was scored
            if len(found) == k:
                break
            essential += 1  # the filters left fewer than k: widen
        bar = found[-1][1]
        rest = idf[essential:]
        if sum(rest) < bar - 1e-9:
            self.last_plan = "essential"
            return found  # a note without an essential term cannot reach the k-th score
        covers = minimal_covers(rest, bar - 1e-9)
        if covers is None:
            return top(any_of(kept))
        self.last_plan = "covers"
        sets = ["(" + " & ".join(tsquery_term(kept[essential + i]) for i in c) + ")" for c in covers]
        return top(" | ".join([any_of(kept[:essential]), *sets]))
