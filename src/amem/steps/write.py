"""Note construction, link generation and evolution: turn LLM answers into validated decisions.

Nothing here touches the store: each function returns a ``Decision`` (attributes, links by stable id,
neighbour updates by stable id) that ``Memory`` applies in one transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..llm.runner import LLMRunner
from ..notes import Note
from ..prompts import analyse, batch, evolve, note
from ..prompts.common import Candidate
from ..text import word_stems
from . import lifecycle

#: The candidates for a (possibly enriched) note, aliased N1..Nk.
NeighbourFinder = Callable[[Note], list[Candidate]]


@dataclass
class NeighbourUpdate:
    note_id: str
    context: str
    tags: list[str]


@dataclass
class Decision:
    keywords: list[str]
    tags: list[str]
    context: str
    links: list[tuple[str, str]] = field(default_factory=list)  # (target id, reason)
    updates: list[NeighbourUpdate] = field(default_factory=list)
    call_ids: list[str] = field(default_factory=list)
    supersedes: list[str] = field(default_factory=list)  # ids of older notes this one replaces


_SPEAKER = re.compile(r"^([A-Z][\w'-]*(?: [A-Z][\w'-]*){0,2}):\s")


def without_speaker(keywords: list[str], note: Note) -> list[str]:
    """Keywords must not be the speaker's name (the paper's rule); small models add it anyway."""
    match = _SPEAKER.match(note.content)
    names = {str(note.metadata.get("speaker", "")).casefold()} | (
        {match.group(1).casefold()} if match else set()
    )
    kept = [k for k in keywords if k.casefold() not in names]
    return kept or keywords


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def grounded(keywords: list[str], note: Note, context: str) -> list[str]:
    """Keep keywords that share a word stem with the note or its context; small models invent others
    (a 'london' for a note about Lisbon). Never leaves a note without keywords."""
    stems = word_stems(note.content) | word_stems(context)
    kept = [k for k in keywords if word_stems(k) & stems]
    return kept or keywords


def grounded_context(context: str, note: Note) -> str:
    """Drop context sentences that share no word stem with the note itself (what small models borrow
    from the neighbours shown next to it). Keeps the first sentence if nothing else would remain."""
    speaker = _SPEAKER.match(note.content)
    own = word_stems(note.content) - (word_stems(speaker.group(1)) if speaker else set())
    sentences = [s for s in _SENTENCE.split(context) if s.strip()]
    kept = [s for s in sentences if word_stems(s) & own]
    return " ".join(kept or sentences[:1])


#: An evolved context must keep at least this share of the neighbour's own content words.
UPDATE_OVERLAP = 0.25


def plausible_update(context: str, neighbour: Note) -> bool:
    """An evolved context must still describe the neighbour: it keeps a quarter (and at least two) of the
    word stems of the neighbour's own content, its speaker aside. Small models otherwise overwrite a
    neighbour with the new note's context, or with a third note's."""
    speaker = _SPEAKER.match(neighbour.content)
    own = word_stems(neighbour.content) - (word_stems(speaker.group(1)) if speaker else set())
    shared = word_stems(context) & own
    return bool(own) and len(shared) >= min(2, len(own)) and len(shared) / len(own) >= UPDATE_OVERLAP


def make_candidates(found: list[tuple[Note, float]], prefix: str = "N") -> list[Candidate]:
    return [Candidate(f"{prefix}{i}", n, sim) for i, (n, sim) in enumerate(found, start=1)]


def pool_candidates(per_note: list[list[Candidate]], limit: int) -> list[Candidate]:
    """One neighbour list for a batch: each note once, at its best similarity, best first, re-aliased."""
    pooled: dict[str, Candidate] = {}
    for found in per_note:
        for cand in found:
            best = pooled.get(cand.note.id)
            if best is None or cand.similarity > best.similarity:
                pooled[cand.note.id] = cand
    ranked = sorted(pooled.values(), key=lambda c: -c.similarity)[:limit]
    return make_candidates([(c.note, c.similarity) for c in ranked])


def updatable(candidates: list[Candidate], evolve_floor: float) -> list[str]:
    """Evolution is offered only for neighbours this close: small models otherwise rewrite everything."""
    return [c.alias for c in candidates if c.similarity >= evolve_floor]


def construct_one(runner: LLMRunner, new: Note, candidates: list[Candidate], evolve_floor: float) -> Decision:
    """Default pipeline: one call for attributes, links and neighbour updates."""
    by_alias = {c.alias: c.note.id for c in candidates}
    notes = {c.alias: c.note for c in candidates}
    allowed = updatable(candidates, evolve_floor)
    out, call = runner.run(note.render(new, candidates, allowed), [new.id, *by_alias.values()])
    return Decision(
        keywords=grounded(without_speaker(out.keywords, new), new, out.context),
        tags=out.tags,
        context=grounded_context(out.context, new),
        links=[(by_alias[link.to], link.why) for link in out.links],
        updates=[
            NeighbourUpdate(by_alias[u.note], u.context, u.tags)
            for u in out.updates
            if plausible_update(u.context, notes[u.note])
        ],
        call_ids=[call.id],
        supersedes=[
            by_alias[a]
            for a in out.supersedes
            if notes[a].event_time <= new.event_time and not lifecycle.speakers_differ(notes[a], new)
        ],
    )


def construct_paper(
    runner: LLMRunner,
    new: Note,
    find: NeighbourFinder,
    evolve_floor: float,
) -> Decision:
    """The reference's two calls: analyse the note, then decide evolution over its neighbours.

    Neighbours are found with the analysed note's full embedding, as in the reference.
    """
    attrs, first = runner.run(analyse.render(new), [new.id])
    enriched = new.model_copy(
        update={"keywords": attrs.keywords, "tags": attrs.tags, "context": attrs.context}
    )
    keywords = grounded(without_speaker(attrs.keywords, new), new, attrs.context)
    decision = Decision(keywords, attrs.tags, grounded_context(attrs.context, new), call_ids=[first.id])
    candidates = [c for c in find(enriched) if c.similarity >= evolve_floor]
    if not candidates:
        return decision
    by_alias = {c.alias: c for c in candidates}
    out, second = runner.run(evolve.render(enriched, candidates), [new.id, *(c.note.id for c in candidates)])
    decision.call_ids.append(second.id)
    if not out.should_evolve:
        return decision
    if "strengthen" in out.actions:
        decision.links = [(by_alias[a].note.id, "suggested by evolution") for a in out.suggested_connections]
        if out.tags_to_update:
            decision.tags = out.tags_to_update
    if "update_neighbor" in out.actions and out.new_context_neighborhood:
        for cand, ctx, tags in zip(
            candidates, out.new_context_neighborhood, out.new_tags_neighborhood, strict=True
        ):
            if ctx and not plausible_update(ctx, cand.note):
                continue
            if (ctx and ctx != cand.note.context) or (tags and tags != cand.note.tags):
                decision.updates.append(
                    NeighbourUpdate(cand.note.id, ctx or cand.note.context, tags or cand.note.tags)
                )
    return decision


def construct_batch(
    runner: LLMRunner, new: list[Note], candidates: list[Candidate], evolve_floor: float
) -> dict[str, Decision]:
    """One call for several new notes; notes the answer leaves out are absent from the result."""
    aliases = [(f"T{i}", n) for i, n in enumerate(new, start=1)]
    by_alias = {c.alias: c.note.id for c in candidates} | {a: n.id for a, n in aliases}
    allowed = updatable(candidates, evolve_floor)
    prompt = batch.render(aliases, candidates, allowed)
    out, call = runner.run(prompt, [n.id for n in new] + [c.note.id for c in candidates])
    decisions: dict[str, Decision] = {}
    cands = {c.alias: c.note for c in candidates}
    for entry in out.notes:
        note_id = by_alias[entry.note]
        mine = dict(aliases)[entry.note]
        decisions[note_id] = Decision(
            keywords=grounded(
                without_speaker(entry.keywords, dict(aliases)[entry.note]),
                dict(aliases)[entry.note],
                entry.context,
            ),
            tags=entry.tags,
            context=grounded_context(entry.context, dict(aliases)[entry.note]),
            links=[(by_alias[link.to], link.why) for link in entry.links],
            call_ids=[call.id],
            supersedes=[
                by_alias[a]
                for a in entry.supersedes
                if cands[a].event_time <= mine.event_time and not lifecycle.speakers_differ(cands[a], mine)
            ],
        )
    if decisions:
        first = next(iter(decisions.values()))
        first.updates = [
            NeighbourUpdate(by_alias[u.note], u.context, u.tags)
            for u in out.updates
            if plausible_update(u.context, cands[u.note])
        ]
    return decisions
