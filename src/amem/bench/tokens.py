"""Recall at equal context tokens.

An LLM-written note costs about twice its turn's tokens when its context is shown, so recall@k compares
unequal prompts. Here every amem method is set next to BM25 and fusion given, question by question, as
many of their top turns as fit in the tokens the method used (the k whose context comes closest), both
for the note as the agent sees it today (content and context) and for its content alone (the context
then only serves the indexes). A curve of recall against tokens shows the same over many k.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import metrics

#: baselines given the same tokens as each amem method
MATCHED = ("bm25", "fusion")
#: how deep a baseline's ranking is kept for matching (deeper than any method's context needs)
MATCH_K = 60
#: the k of the recall-against-tokens curve
CURVE_KS = (1, 2, 3, 5, 7, 10, 15, 20, 30)
#: the two presentations of an amem note: as shown today, and its content alone
VIEWS = ("shown", "content_only")


def tokens_of(chars: int) -> int:
    """``approx_tokens`` of a text of this many characters."""
    return max(1, (chars + 3) // 4) if chars else 0


def lines_chars(lines: Sequence[str]) -> int:
    """Characters of the lines joined by newlines, as they go into a prompt."""
    return sum(len(line) for line in lines) + max(0, len(lines) - 1)


def prefix(ranked: Sequence[Sequence[Any]], budget: int) -> tuple[list[str], int]:
    """The dia ids and tokens of the top hits of ``ranked`` (each [dia ids, characters of its line])
    whose context comes closest to ``budget`` tokens (fewer on a tie)."""
    best_ids: list[str] = []
    best_tokens = 0
    ids: list[str] = []
    chars = 0
    for i, (hit_ids, hit_chars) in enumerate(ranked):
        chars += int(hit_chars) + (1 if i else 0)
        ids = [*ids, *(d for d in hit_ids if d not in ids)]
        tokens = tokens_of(chars)
        if abs(tokens - budget) < abs(best_tokens - budget):
            best_ids, best_tokens = ids, tokens
        if tokens >= budget:
            break
    return best_ids, best_tokens


def _key(record: dict[str, Any]) -> tuple[str, int]:
    return str(record["conversation"]), int(record["qid"])


def equal_tokens(records: Sequence[dict[str, Any]], method: str) -> dict[str, Any] | None:
    """``method``'s recall at its answer k beside each baseline's at the same tokens, per view."""
    from .locomo import by_category  # the categories' means, as every other figure of the summary

    mine = [r for r in records if r["method"] == method and "bare_tokens" in r]
    if not mine:
        return None
    ranked = {
        name: {_key(r): r["ranked"] for r in records if r["method"] == name and "ranked" in r}
        for name in MATCHED
    }
    out: dict[str, Any] = {}
    for view, field in zip(VIEWS, ("context_tokens", "bare_tokens"), strict=True):
        entry: dict[str, Any] = {"tokens": metrics.mean(r[field] for r in mine)}
        for name, lists in ranked.items():
            rows: list[dict[str, Any]] = []
            for r in mine:
                if _key(r) not in lists:
                    continue
                ids, used = prefix(lists[_key(r)], int(r[field]))
                evidence = set(r["evidence"])
                rows.append(
                    {"category": r["category"], "recall": metrics.recall(ids, evidence), "used": used}
                )
            if rows:
                entry[name] = {
                    "recall": by_category(rows, "recall"),
                    "tokens": metrics.mean(x["used"] for x in rows),
                }
        out[view] = entry
    return out


def curve(records: Sequence[dict[str, Any]], method: str) -> dict[str, dict[str, float | None]]:
    """Mean recall (categories 1-4) and tokens of both views at every k of the curve."""
    mine = [r for r in records if r["method"] == method and "curve" in r]
    answerable = [r for r in mine if str(r["category"]) in "1234"]
    out: dict[str, dict[str, float | None]] = {}
    for k in sorted({int(k) for r in mine for k in r["curve"]}):
        key = str(k)
        out[key] = {
            "recall": metrics.mean(r["curve"][key][0] for r in answerable if key in r["curve"]),
            "tokens": metrics.mean(r["curve"][key][1] for r in mine if key in r["curve"]),
            "bare_tokens": metrics.mean(r["curve"][key][2] for r in mine if key in r["curve"]),
        }
    return out
