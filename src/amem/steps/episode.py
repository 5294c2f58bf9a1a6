"""Episode writes: cut a scope's consecutive new turns into episodes, and make one call per episode into
checked decisions for each of its turns. Nothing here touches the store (``pipeline.enrich_episode``
does).

An episode is cut at a session boundary (another ``session`` in the metadata, or an hour between two
turns), at a topic shift (a turn far, by embedding, from the episode's last turns) and at a size limit.
The call gives the episode's topic (a tag), the older notes it is about (linked from the turn closest to
each) and corrections of older notes; each turn's keywords and context are derived from its text, with
who speaks to whom and its relative times resolved from its date (``when.resolve``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from ..embed.base import Vectors
from ..llm.runner import LLMRunner
from ..notes import Note
from ..prompts import episode
from ..prompts.common import Candidate
from . import guard, when
from .ground import is_content, is_number, own_stems, speaker_of, stem, tokens
from .write import Checks, Decision, updatable

#: Words of talk rather than of what is talked about: never a derived keyword, and no evidence that a
#: context describes its turn ("great", "sounds", "really").
COMMON = """good great new see hear heard cause pretty really thing things lot lots time times know
think thought feel felt like love want wanna make made get got getting going gonna look looks looking
sounds sound glad sorry hope hoping wait wow yeah yes sure definitely totally maybe actually kind
awesome amazing cool nice fun super much many way well keep kept take took tell told come came say
lately recently always never still even ever thanks thank share shared""".split()
COMMON_STEMS = frozenset(stem(w) for w in COMMON) | guard.CHATTER_STEMS


@dataclass(frozen=True)
class Rules:
    """Where episodes are cut (``Settings.episode_*``)."""

    max_turns: int = 12
    max_chars: int = 3000
    gap: timedelta = timedelta(hours=1)
    #: a turn whose cosine to the mean of the episode's last turns is under this starts a new episode ...
    shift: float = 0.05
    #: ... once the episode has this many turns (single turns are too short to judge a topic by)
    min_turns: int = 4


def trivial(note: Note, people: Sequence[str] = ()) -> bool:
    """Nothing to remember: under two content words once the speaker, the people and talk itself are
    aside ("Thanks, Jon!", "See you soon", "Wow, sounds great!")."""
    names = {stem(w) for p in [*people, speaker_of(note) or ""] for w in tokens(p)}
    return len(own_stems(note) - names - COMMON_STEMS) < 2


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def _recent(vectors: Sequence[Sequence[float]]) -> list[float]:
    last = vectors[-3:]
    return [sum(col) / len(last) for col in zip(*last, strict=True)]


def segment(notes: Sequence[Note], vectors: Vectors, rules: Rules = Rules()) -> list[list[int]]:
    """The notes' indexes cut into episodes, in order (notes of another scope always start a new one)."""
    episodes: list[list[int]] = []
    chars = 0
    for i, note in enumerate(notes):
        current = episodes[-1] if episodes else None
        if current is not None:
            prev = notes[current[-1]]
            cut = (
                len(current) >= rules.max_turns
                or chars + len(note.content) > rules.max_chars
                or prev.scope != note.scope
                or _session(prev) != _session(note)
                or abs(note.event_time - prev.event_time) > rules.gap
                or (
                    len(current) >= rules.min_turns
                    and _cosine(vectors[i], _recent([vectors[j] for j in current])) < rules.shift
                )
            )
            if not cut:
                current.append(i)
                chars += len(note.content)
                continue
        episodes.append([i])
        chars = len(note.content)
    return episodes


def _session(note: Note) -> object:
    return note.metadata.get("session")


def keywords(note: Note, episode_notes: Sequence[Note], limit: int = 5) -> list[str]:
    """A turn's keywords without the LLM: its content words that the fewest turns of its episode use
    (what sets it apart), longer first, in the turn's order; the people and talk words ("great",
    "sounds") aside."""
    people = {stem(w) for n in episode_notes for w in tokens(speaker_of(n) or "")}
    df = Counter(s for n in episode_notes for s in own_stems(n))
    words: dict[str, tuple[int, int, int, str]] = {}
    for pos, w in enumerate(tokens(note.content)):
        s = stem(w)
        if not is_content(w) or is_number(w) or len(w) < 3 or s in people | COMMON_STEMS or s in words:
            continue
        words[s] = (df[s], -len(w), pos, w.lower())
    ranked = sorted(words.values())[:limit]
    return [r[-1] for r in sorted(ranked, key=lambda r: r[2])] or guard.derived_keywords(note, limit)


def turn_context(note: Note, keywords: list[str], others: Sequence[str]) -> str:
    """A context without the LLM: who, to whom (the one other speaker of a two-person episode), when,
    about what, and what its relative times mean ("yesterday: 19 January 2023"), all from the turn."""
    who = speaker_of(note)
    text = guard.derived_context(note, keywords)
    if who and len(others) == 1:
        text = text.replace(f"{who} on ", f"{who} to {others[0]} on ", 1)
    times = when.resolve(note.content, note.event_time)
    return text[:-1] + "; " + "; ".join(times) + "." if times else text


def construct(
    runner: LLMRunner,
    turns: Sequence[Note],
    candidates: list[Candidate],
    evolve_floor: float,
    checks: Checks | None = None,
    closest: dict[str, str] | None = None,
) -> dict[str, Decision]:
    """One call for the episode; a decision for every turn. ``closest``: for each candidate's note id,
    the id of the turn it is nearest to (a related note is linked from that turn)."""
    names = sorted({s for n in turns if (s := speaker_of(n))})
    if all(trivial(n, names) for n in turns):  # "Bye!" "See you!": nothing to ask an LLM about
        return {n.id: _derived(n, turns, names, []) for n in turns}
    aliases = [(f"T{i}", n) for i, n in enumerate(turns, start=1)]
    older = {c.alias: c.note for c in candidates}
    allowed = updatable(candidates, evolve_floor)
    shown = [n.id for n in turns] + [c.note.id for c in candidates]
    out, call = runner.run(episode.render(aliases, candidates, allowed), shown)
    check = (checks or Checks()).checker(runner, call, [*turns, *older.values()])
    whole = turns[-1].model_copy(update={"content": "\n".join(n.content for n in turns)})
    topic_tags = check.tags(whole, [episode_tag(out.topic)] if out.topic else [], keywords(whole, turns))
    by_id = {n.id: n for n in turns}
    linked: dict[str, list[Note]] = {}  # turn id -> the related notes linked from it
    said = [n for n in turns if not trivial(n, names)] or list(turns)
    for alias in out.related:
        turn = by_id.get((closest or {}).get(older[alias].id, ""), said[-1])
        if trivial(turn, names):  # a greeting is no link's end: the nearest turn that says something
            turn = min(said, key=lambda n: abs(turns.index(n) - turns.index(turn)))
        linked.setdefault(turn.id, []).append(older[alias])
    decisions: dict[str, Decision] = {}
    for note in turns:
        decision = _derived(note, turns, names, topic_tags)
        decision.links = [(other.id, check.derived_reason(note, other)) for other in linked.get(note.id, [])]
        decision.call_ids = [call.id]
        decisions[note.id] = decision
    # the updates come from the episode as a whole: checked against all its turns, recorded on its last
    decisions[turns[-1].id].updates = [
        u for u in (check.update(older[u.note], whole, u.context, u.tags) for u in out.updates) if u
    ]
    check.done()
    return decisions


def _derived(note: Note, turns: Sequence[Note], names: Sequence[str], tags: list[str]) -> Decision:
    """A turn's fields from its text: keywords, context, and the episode's tags (or its first keyword)."""
    kws = keywords(note, turns)
    others = [n for n in names if n != speaker_of(note)]
    return Decision(kws, list(tags) or [kws[0].lower()[:30]], turn_context(note, kws, others))


def episode_tag(topic: str) -> str:
    return topic.casefold().strip()[:30].strip()
