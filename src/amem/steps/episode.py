"""Episode writes: cut a scope's consecutive new turns into episodes, and make one call per episode into
checked decisions for each of its turns. Nothing here touches the store (``pipeline.enrich_episodes``
does).

An episode is cut at a session boundary (another ``session`` in the metadata, or an hour between two
turns), at a topic shift (a turn far, by embedding, from the episode's last turns) and at a size limit.
A trivial turn ("thanks!", "see you") is shown to the LLM so the conversation reads whole, but it may
not get an entry: its fields are derived from its text.
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
from . import guard
from .ground import content_stems, is_content, is_number, own_stems, speaker_of, stem, tokens
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

    max_turns: int = 8
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


def keywords(note: Note, episode_notes: Sequence[Note], context: str = "", limit: int = 5) -> list[str]:
    """A turn's keywords without the LLM: its own words that its checked context uses (what the LLM
    found worth saying), then those that the fewest turns of its episode use (what sets it apart);
    the speaker, the people and chatter aside."""
    people = {stem(w) for n in episode_notes for w in tokens(speaker_of(n) or "")}
    df = Counter(s for n in episode_notes for s in own_stems(n))
    said = content_stems(context)
    words: dict[str, tuple[bool, int, int, int, str]] = {}
    for pos, w in enumerate(tokens(note.content)):
        s = stem(w)
        if not is_content(w) or is_number(w) or len(w) < 3 or s in people | COMMON_STEMS or s in words:
            continue
        words[s] = (s not in said, df[s], -len(w), pos, w.lower())
    ranked = sorted(words.values())[:limit]
    return [r[-1] for r in sorted(ranked, key=lambda r: r[3])] or guard.derived_keywords(note, limit)


def aligned(context: str, own: Note, turns: Sequence[Note], people: set[str]) -> bool:
    """A context is about its own turn: it shares a word with it, and no other turn of the episode
    shares two more (a small model writing many contexts at once shifts them onto a neighbour's)."""
    words = content_stems(context) - people - COMMON_STEMS
    mine = len(words & own_stems(own))
    others = [len(words & own_stems(t)) for t in turns if t.id != own.id]
    return mine > 0 and (not others or max(others) < mine + 2)


def construct(
    runner: LLMRunner,
    turns: Sequence[Note],
    candidates: list[Candidate],
    evolve_floor: float,
    checks: Checks | None = None,
) -> dict[str, Decision]:
    """One call for the episode; a decision for every turn (derived where the answer has none)."""
    aliases = {f"T{i}": n for i, n in enumerate(turns, start=1)}
    older = {c.alias: c.note for c in candidates}
    names = sorted({s for n in turns if (s := speaker_of(n))})
    answerable = [a for a, n in aliases.items() if not trivial(n, names)]
    allowed = updatable(candidates, evolve_floor)
    prompt = episode.render(list(aliases.items()), answerable, candidates, allowed)
    out, call = runner.run(prompt, [n.id for n in turns] + [c.note.id for c in candidates])
    check = (checks or Checks()).checker(runner, call, [*turns, *older.values()])
    check.repairs = False  # one call per episode: a refused context is derived, not asked for again
    people = {stem(w) for p in check.people for w in tokens(p)}
    whole = turns[-1].model_copy(update={"content": "\n".join(n.content for n in turns)})
    topic_tags = check.tags(whole, [episode_tag(out.topic)] if out.topic else [], keywords(whole, turns))
    order = list(aliases)
    given: dict[str, str] = {}  # context -> the turn it was first given to
    decisions: dict[str, Decision] = {}
    for alias, note in aliases.items():
        text = out.contexts.get(alias, "")
        links = out.links.get(alias, [])
        linked = [older[a] for a in links if a in older]
        if text and (text in given or not aligned(text, note, [*turns, *linked], people)):
            problem = f"the context of {given[text]} again" if text in given else "about another turn"
            check.refuse("context", note, text, problem, "derived")
            text = ""
        if text:
            given.setdefault(text, alias)
            seen = [aliases[a] for a in order[: order.index(alias) + 1]]
            seen += linked
            text = check.context(note, text, [], sources=seen)
            if text == guard.derived_context(note, []):
                text = ""  # refused whole: derived below, with the turn's keywords
        kws = keywords(note, turns, text)
        decision = Decision(kws, list(topic_tags), text or guard.derived_context(note, kws))
        for target in links:
            decision.links.append((older[target].id, check.derived_reason(note, older[target])))
        decision.call_ids = [call.id]
        decisions[note.id] = decision
    # the updates come from the episode as a whole: checked against all its turns, recorded on its last
    decisions[turns[-1].id].updates = [
        u for u in (check.update(older[u.note], whole, u.context, u.tags) for u in out.updates) if u
    ]
    check.done()
    return decisions


def episode_tag(topic: str) -> str:
    return topic.casefold().strip()[:30].strip()
