"""Note construction, link generation and evolution: turn LLM answers into validated decisions.

Nothing here touches the store: each function returns a ``Decision`` (attributes, links by stable id,
neighbour updates by stable id) that ``Memory`` applies in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..llm.runner import LLMRunner
from ..notes import LLMCall, Note
from ..prompts import analyse, batch, evolve, note
from ..prompts.common import Candidate
from . import guard, lifecycle

#: The candidates for a (possibly enriched) note, aliased N1..Nk.
NeighbourFinder = Callable[[Note], list[Candidate]]


#: A neighbour's evolved context and tags, checked (``guard.Checker.update``).
NeighbourUpdate = guard.Update


@dataclass
class Checks:
    """What the grounding checks need beyond the prompt: the scope's tag counts and a note's history."""

    tags: guard.TagStats | None = None
    history: guard.History | None = None

    def checker(self, runner: LLMRunner, call: LLMCall, shown: list[Note]) -> guard.Checker:
        return guard.Checker(runner, call, shown, self.tags, self.history)


@dataclass
class Decision:
    keywords: list[str]
    tags: list[str]
    context: str
    links: list[tuple[str, str]] = field(default_factory=list)  # (target id, reason)
    updates: list[NeighbourUpdate] = field(default_factory=list)
    call_ids: list[str] = field(default_factory=list)
    supersedes: list[str] = field(default_factory=list)  # ids of older notes this one replaces


def attributes(
    check: guard.Checker, new: Note, keywords: list[str], tags: list[str], context: str
) -> Decision:
    """A note's own fields, each checked against the note (the context repaired once if need be)."""
    kept = check.keywords(new, keywords)
    return Decision(kept, check.tags(new, tags, kept), check.context(new, context, kept))


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


def construct_one(
    runner: LLMRunner,
    new: Note,
    candidates: list[Candidate],
    evolve_floor: float,
    checks: Checks | None = None,
) -> Decision:
    """Default pipeline: one call for attributes, links and neighbour updates."""
    by_alias = {c.alias: c.note.id for c in candidates}
    notes = {c.alias: c.note for c in candidates}
    allowed = updatable(candidates, evolve_floor)
    out, call = runner.run(note.render(new, candidates, allowed), [new.id, *by_alias.values()])
    check = (checks or Checks()).checker(runner, call, [new, *notes.values()])
    decision = attributes(check, new, out.keywords, out.tags, out.context)
    decision.links = [(by_alias[lk.to], check.reason(new, notes[lk.to], lk.why)) for lk in out.links]
    decision.updates = [
        u for u in (check.update(notes[u.note], new, u.context, u.tags) for u in out.updates) if u
    ]
    decision.call_ids = [call.id]
    decision.supersedes = [
        by_alias[a]
        for a in out.supersedes
        if notes[a].event_time <= new.event_time and not lifecycle.speakers_differ(notes[a], new)
    ]
    check.done()
    return decision


def construct_paper(
    runner: LLMRunner,
    new: Note,
    find: NeighbourFinder,
    evolve_floor: float,
    checks: Checks | None = None,
) -> Decision:
    """The reference's two calls: analyse the note, then decide evolution over its neighbours.

    Neighbours are found with the analysed note's full embedding, as in the reference.
    """
    checks = checks or Checks()
    attrs, first = runner.run(analyse.render(new), [new.id])
    check = checks.checker(runner, first, [new])
    decision = attributes(check, new, attrs.keywords, attrs.tags, attrs.context)
    decision.call_ids = [first.id]
    check.done()
    enriched = new.model_copy(
        update={"keywords": decision.keywords, "tags": decision.tags, "context": decision.context}
    )
    candidates = [c for c in find(enriched) if c.similarity >= evolve_floor]
    if not candidates:
        return decision
    by_alias = {c.alias: c for c in candidates}
    out, second = runner.run(evolve.render(enriched, candidates), [new.id, *(c.note.id for c in candidates)])
    decision.call_ids.append(second.id)
    if not out.should_evolve:
        return decision
    check = checks.checker(runner, second, [new, *(c.note for c in candidates)])
    if "strengthen" in out.actions:
        # the reference's evolution gives no reason for a link: say what the two notes share
        decision.links = [
            (by_alias[a].note.id, check.derived_reason(new, by_alias[a].note))
            for a in out.suggested_connections
        ]
        if out.tags_to_update:
            decision.tags = check.tags(new, out.tags_to_update, decision.keywords)
    if "update_neighbor" in out.actions and out.new_context_neighborhood:
        for cand, ctx, tags in zip(
            candidates, out.new_context_neighborhood, out.new_tags_neighborhood, strict=True
        ):
            if ctx and ctx != cand.note.context and (update := check.update(cand.note, new, ctx, tags)):
                decision.updates.append(update)
    check.done()
    return decision


def construct_batch(
    runner: LLMRunner,
    new: list[Note],
    candidates: list[Candidate],
    evolve_floor: float,
    checks: Checks | None = None,
) -> dict[str, Decision]:
    """One call for several new notes; notes the answer leaves out are absent from the result."""
    aliases = dict((f"T{i}", n) for i, n in enumerate(new, start=1))
    by_alias = {c.alias: c.note.id for c in candidates} | {a: n.id for a, n in aliases.items()}
    allowed = updatable(candidates, evolve_floor)
    prompt = batch.render(list(aliases.items()), candidates, allowed)
    out, call = runner.run(prompt, [n.id for n in new] + [c.note.id for c in candidates])
    cands = {c.alias: c.note for c in candidates}
    shown = {**cands, **aliases}
    check = (checks or Checks()).checker(runner, call, list(shown.values()))
    decisions: dict[str, Decision] = {}
    for entry in out.notes:
        mine = aliases[entry.note]
        decision = attributes(check, mine, entry.keywords, entry.tags, entry.context)
        decision.links = [(by_alias[lk.to], check.reason(mine, shown[lk.to], lk.why)) for lk in entry.links]
        decision.call_ids = [call.id]
        decision.supersedes = [
            by_alias[a]
            for a in entry.supersedes
            if cands[a].event_time <= mine.event_time and not lifecycle.speakers_differ(cands[a], mine)
        ]
        decisions[mine.id] = decision
    if decisions:
        # the updates come from the batch as a whole: checked against the batch's first note
        first = next(iter(decisions))
        author = next(n for n in new if n.id == first)
        whole = author.model_copy(update={"content": "\n".join(n.content for n in new)})
        decisions[first].updates = [
            u for u in (check.update(cands[u.note], whole, u.context, u.tags) for u in out.updates) if u
        ]
    check.done()
    return decisions
