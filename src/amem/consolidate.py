"""``Memory.consolidate``: one upkeep pass over a scope, and its undo.

Order: exact duplicates merge (no LLM); near-duplicate pairs go to the LLM, which says same (merge),
updates (reported only: superseding is evolution's job) or different (nothing); links decayed under the
floor are pruned;
notes expired or unimportant are archived. A dry run reports the same list without writing. A real run
writes every change as a version tagged with the run id, so ``undo`` puts back what the run changed.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from . import upkeep
from .errors import AmemError, NotFound
from .llm.runner import CallFailed
from .notes import Link, Note, NoteStatus, VersionCause, new_id, utcnow
from .prompts import merge as merge_prompt
from .steps import guard, lifecycle
from .store import Filters

if TYPE_CHECKING:
    from .memory import Memory

Progress = Callable[[str], None]


class Change(BaseModel):
    kind: str  # merge | supersede | prune | archive
    note_id: str  # the note changed (merge: the absorbed note; prune: the link's source)
    other_id: str | None = None  # merge: the survivor; supersede: the newer note; prune: the target
    detail: str = ""


class ConsolidationReport(BaseModel):
    run_id: str
    dry_run: bool
    as_of: datetime
    changes: list[Change] = Field(default_factory=list)
    #: near-duplicate pairs found but not judged (no LLM, or the call failed): nothing merged without one
    unconfirmed: int = 0
    judged: int = 0
    #: pairs the LLM said were a fact and its update: reported, not acted on (see ``consolidate``)
    updates_left: int = 0
    notes_before: int = 0
    notes_after: int = 0
    links_before: int = 0
    links_after: int = 0
    seconds: float = 0.0

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)


class UndoReport(BaseModel):
    run_id: str
    restored: list[str] = Field(default_factory=list)
    #: notes changed again after the run: left as they are unless forced
    skipped: list[str] = Field(default_factory=list)


def _watermark_key(mem: Memory) -> str:
    s = mem.scope
    return f"consolidated_at:{s.user_id or '*'}:{s.agent_id or '*'}:{s.run_id or '*'}"


def consolidate(
    mem: Memory,
    dry_run: bool = False,
    as_of: datetime | None = None,
    use_llm: bool = True,
    full: bool = False,
    progress: Progress | None = None,
) -> ConsolidationReport:
    started = time.perf_counter()
    wall_start = utcnow()
    now = as_of or wall_start
    policy = lifecycle.Policy.from_settings(mem.settings)
    mem.flush_usage()
    store, scope = mem.store, mem.scope
    report = ConsolidationReport(run_id="c-" + new_id()[:12], dry_run=dry_run, as_of=now)
    batch = None if dry_run else report.run_id
    say = progress or (lambda _: None)

    links = list(store.iter_links(scope))
    report.links_before = len(links)
    report.notes_before = store.count_notes(scope, _active())
    gone: set[str] = set()  # absorbed in this run (a dry run pretends)
    merged_into: dict[str, str] = {}

    say("exact duplicates")
    for group in store.duplicate_groups(scope):
        notes = store.get_notes(group)
        members = [notes[i] for i in group if i in notes]
        survivor = members[0]
        for other in members[1:]:
            survivor, absorbed = lifecycle.survivor_first(survivor, other)
            report.changes.append(
                Change(kind="merge", note_id=absorbed.id, other_id=survivor.id, detail="exact duplicate")
            )
            gone.add(absorbed.id)
            merged_into[absorbed.id] = survivor.id
            if not dry_run:
                survivor = upkeep.merge(mem, survivor, absorbed, "exact duplicate", None, batch)

    say("near duplicates")
    since = None
    if not full and (mark := store.get_meta(_watermark_key(mem))):
        since = datetime.fromisoformat(mark)
    for older_id, newer_id, sim in store.similar_pairs(scope, policy.merge_similarity, since):
        if older_id in gone or newer_id in gone:
            continue
        if not use_llm or not mem.llm_enabled:
            report.unconfirmed += 1
            continue
        pair = store.get_notes([older_id, newer_id])
        if len(pair) < 2 or any(n.status != NoteStatus.active for n in pair.values()):
            continue
        older, newer = sorted(pair.values(), key=lambda n: (n.event_time, n.ingest_time, n.id))
        if lifecycle.speakers_differ(older, newer):
            continue  # one person's words never merge with or replace another's
        try:
            answer, call = mem.runner.run(merge_prompt.render(older, newer), [older.id, newer.id])
        except CallFailed:
            report.unconfirmed += 1
            continue
        report.judged += 1
        check = guard.Checker(mem.runner, call, [older, newer])
        detail = f"cosine {sim:.3f}; {check.merge_reason(older, newer, answer.why)}".rstrip("; ")
        check.done()
        if answer.verdict == "same":
            survivor, absorbed = lifecycle.survivor_first(older, newer)
            report.changes.append(
                Change(kind="merge", note_id=absorbed.id, other_id=survivor.id, detail=detail)
            )
            gone.add(absorbed.id)
            merged_into[absorbed.id] = survivor.id
            if not dry_run:
                upkeep.merge(mem, survivor, absorbed, detail, call.id, batch)
        elif answer.verdict == "updates":
            # superseding is left to evolution, where the LLM sees the new note with its neighbours:
            # on near duplicates the default local model called 30 of 52 LoCoMo pairs "updates", every
            # one a reworded thanks or greeting (docs/design.md, "Upkeep")
            report.updates_left += 1

    say("links")
    if not dry_run and report.count("merge"):
        links = list(store.iter_links(scope))  # merges re-pointed some
    if dry_run:  # what the merges would have made of the links
        links = _repointed(links, merged_into)
    degree: Counter[str] = Counter()
    prune: dict[str, list[tuple[str, float]]] = {}
    for link in links:
        if lifecycle.should_prune(link, now, policy):
            weight = link.effective_weight(now, policy.link_half_life_days)
            prune.setdefault(link.source_id, []).append((link.target_id, weight))
        else:
            degree.update([link.source_id, link.target_id])
    for source, targets in prune.items():
        for target, weight in targets:
            report.changes.append(
                Change(
                    kind="prune",
                    note_id=source,
                    other_id=target,
                    detail=f"weight {weight:.3f} < {policy.prune_below}",
                )
            )
        if not dry_run:
            _prune(mem, source, targets, batch)

    say("forgetting")
    for note in _archive_candidates(mem, now, policy):
        if note.id in gone:
            continue
        reason = lifecycle.archive_reason(note, degree[note.id], now, policy)
        if reason is None:
            continue
        report.changes.append(Change(kind="archive", note_id=note.id, detail=reason))
        if not dry_run:
            _archive(mem, note, reason, batch)

    if not dry_run:
        store.set_meta(_watermark_key(mem), wall_start.isoformat())
        report.notes_after = store.count_notes(scope, _active())
        report.links_after = sum(1 for _ in store.iter_links(scope))
    else:
        report.notes_after = report.notes_before - report.count("merge") - report.count("archive")
        report.links_after = len(links) - report.count("prune")  # as the merges would leave them
    report.seconds = time.perf_counter() - started
    return report


def _repointed(links: list[Link], merged_into: dict[str, str]) -> list[Link]:
    """The links as the merges re-point them: ends moved to the survivor, self-links dropped, a pair
    reached twice kept once with the larger weight and the later use (as ``upkeep.merge`` does)."""

    def final(note_id: str) -> str:
        while note_id in merged_into:
            note_id = merged_into[note_id]
        return note_id

    out: dict[tuple[str, str], Link] = {}
    for link in links:
        pair = (final(link.source_id), final(link.target_id))
        if pair[0] == pair[1]:
            continue
        old = out.get(pair)
        moved = link.model_copy(update={"source_id": pair[0], "target_id": pair[1]})
        if old is not None:
            moved.weight, moved.updated_at = (
                max(old.weight, link.weight),
                max(old.updated_at, link.updated_at),
            )
        out[pair] = moved
    return list(out.values())


def _archive_candidates(mem: Memory, now: datetime, policy: lifecycle.Policy) -> Iterator[Note]:
    """Active notes that have expired, and (when forgetting is on) those old enough to be forgotten:
    the only ones the rules can archive, so a memory of new notes is not read whole."""
    seen: set[str] = set()
    passes = [Filters(statuses=[NoteStatus.active], expires_by=now)]
    if policy.archive_below > 0:
        old = now - timedelta(days=policy.archive_after_days)
        passes.append(Filters(statuses=[NoteStatus.active], ingested_before=old))
    for filters in passes:
        for note in mem.store.iter_notes(mem.scope, filters=filters):
            if note.id not in seen:
                seen.add(note.id)
                yield note


def _active() -> Filters:
    return Filters(statuses=[NoteStatus.active])


def _prune(mem: Memory, source: str, targets: list[tuple[str, float]], batch: str | None) -> None:
    detail = "pruned links to " + ", ".join(f"{t} (weight {w:.3f})" for t, w in targets)
    with mem.store.atomic():
        note = mem.store.get_notes([source]).get(source)
        if note is None:
            return
        mem.store.delete_links([(source, t) for t, _ in targets])
        upkeep.change(mem, note, VersionCause.prune, detail, batch)


def _archive(mem: Memory, note: Note, reason: str, batch: str | None) -> None:
    with contextlib.suppress(AmemError):  # changed or deleted meanwhile: the next run looks again
        upkeep.change(mem, note, VersionCause.archive, reason, batch, status=NoteStatus.archived)


def undo(mem: Memory, run_id: str, force: bool = False) -> UndoReport:
    """Restore every note a consolidation run changed to its version from before the run."""
    versions = mem.store.versions_in_batch(run_id)
    if not versions:
        raise NotFound(  # a user's memory sees only what a run wrote into that user's notes
            f"no consolidation run {run_id!r} wrote anything in this scope; `amem consolidate` prints "
            "run ids, and a run is undone with the scope that ran it"
        )
    first: dict[str, tuple[int, datetime]] = {}
    last: dict[str, int] = {}
    for v in versions:
        if v.note_id not in first or v.version < first[v.note_id][0]:
            first[v.note_id] = (v.version, v.created_at)
        last[v.note_id] = max(last.get(v.note_id, 0), v.version)
    outside = [nid for nid, n in mem.store.get_notes(list(first)).items() if not mem.scope.matches(n)]
    if outside:  # a run over a wider scope is undone from that scope, never partly from a narrower one
        raise NotFound(f"no consolidation run {run_id!r} in this scope; undo it with the scope that ran it")
    report = UndoReport(run_id=run_id)
    for note_id in reversed(list(first)):
        current = mem.store.get_note(note_id)
        if current is None:
            continue
        if current.version != last[note_id] and not force:
            report.skipped.append(note_id)
            continue
        version, at = first[note_id]
        upkeep.restore(
            mem, note_id, version - 1, f"undo-{run_id}", f"undo of consolidation {run_id}", links_after=at
        )
        report.restored.append(note_id)
    return report
