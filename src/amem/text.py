"""Small text helpers shared by the keyword index and the answer validators."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)

# fmt: off
#: Function words: they match almost every note, so a keyword query spends its time on them for nothing.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so
some such than that the their theirs them themselves then there these they this those through to too
under until up very was we were what when where which while who whom why will with would you your
yours yourself yourselves it's i'm don't didn't says said
""".split())
# fmt: on


def query_words(text: str, limit: int = 64) -> list[str]:
    """The distinct lower-case words of a keyword query, in order. Stop words are left out unless nothing
    else remains, so that "who was she?" still finds something; both stores use this one rule."""
    words = [w for w in _WORD.findall(text.lower()) if len(w) > 1 or w.isdigit()]
    content = [w for w in words if w not in STOPWORDS]
    return list(dict.fromkeys(content or words))[:limit]


_STEM_WORD = re.compile(r"[^\W_]{3,}", re.UNICODE)


def word_stems(text: str) -> set[str]:
    """Crude stems (first four letters of words of 3+ letters, stop words out): enough to tell whether
    an LLM's sentence is grounded in a note, cheap and language-agnostic."""
    return {w[:4] for w in (m.lower() for m in _STEM_WORD.findall(text)) if w not in STOPWORDS}
