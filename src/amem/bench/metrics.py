"""LoCoMo metrics: evidence recall, token F1 (normalised, Porter-stemmed), BLEU-1, abstention.

F1 follows LoCoMo's own evaluation: lower-case, strip punctuation and articles, Porter-stem every token;
for category 1 (multi-hop) the gold answer is split on commas and each part is matched to its best
predicted part. Category 5 (adversarial) is scored as abstention, never against ``adversarial_answer``.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from ..locomo import evidence_ids as evidence_ids  # re-exported: scoring needs it too

_ARTICLES = re.compile(r"\b(a|an|the|and)\b")
_PUNCT = str.maketrans("", "", string.punctuation + "‘’“”")
_ABSTAIN = re.compile(
    r"\b(not mentioned|no mention|not (?:stated|specified|provided|available|discussed|known|say|said|clear)"
    r"|no information|not enough information|unknown|cannot be determined|can't be determined"
    r"|(?:do|does) not (?:say|mention|know)|don't know|no record|not in the (?:conversation|memory|notes))\b",
    re.IGNORECASE,
)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import snowballstemmer  # a small pure-Python dependency of the [bench] extra

    return snowballstemmer.stemmer("porter")


def normalise(text: str) -> str:
    text = str(text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def tokens(text: str) -> list[str]:
    words = normalise(text).split()
    return list(_stemmer().stemWords(words)) if words else []


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = tokens(prediction), tokens(gold)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def multi_f1(prediction: str, gold: str) -> float:
    """Category 1: every comma-separated part of the gold answer matched to its best predicted part."""
    golds = [g for g in str(gold).split(",") if g.strip()]
    preds = [p for p in str(prediction).split(",") if p.strip()] or [str(prediction)]
    if not golds:
        return token_f1(prediction, gold)
    return sum(max(token_f1(p, g) for p in preds) for g in golds) / len(golds)


def bleu1(prediction: str, gold: str) -> float:
    """Unigram precision with the brevity penalty (BLEU with n = 1), on the same stemmed tokens."""
    pred, ref = tokens(prediction), tokens(gold)
    if not pred or not ref:
        return float(pred == ref)
    clipped = sum((Counter(pred) & Counter(ref)).values())
    precision = clipped / len(pred)
    penalty = 1.0 if len(pred) > len(ref) else math.exp(1 - len(ref) / len(pred))
    return penalty * precision


def abstained(answer: str) -> bool:
    return bool(_ABSTAIN.search(str(answer)))


def answer_scores(category: int, prediction: str, gold: Any) -> dict[str, float]:
    if category == 5:
        score = float(abstained(prediction))
        return {"f1": score, "bleu1": score}
    gold_text = str(gold)
    f1 = multi_f1(prediction, gold_text) if category == 1 else token_f1(prediction, gold_text)
    return {"f1": f1, "bleu1": bleu1(prediction, gold_text)}


def recall(retrieved: Sequence[str], evidence: set[str]) -> float | None:
    if not evidence:
        return None
    return len(evidence & set(retrieved)) / len(evidence)


def mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
