"""The write pipeline's storage side: find a new note's neighbours, run the LLM step, and write the
note, its links, evolved neighbours and superseded notes in one transaction (or keep it pending).

Exact duplicates are checked again inside the transaction that would insert a new note, under a lock on
(scope, content hash): two writers adding the same content at once make one note, the second folded into
it. ``Memory`` owns validation and batching and calls these; the decisions themselves are pure
(``steps/write.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING

from . import upkeep
from .embed.base import Vectors
from .errors import NotFound
from .llm.runner import CallFailed
from .notes import EnrichReport, EnrichState, Link, LLMCall, Note, NoteStatus, VersionCause, utcnow
from .steps import episode, lifecycle, write
from .store import Filters

if TYPE_CHECKING:
    from .memory import Memory

log = logging.getLogger("amem")
#: After this many unusable LLM answers a note is marked ``failed`` (still stored and searchable). A call
#: that could not reach the provider is no attempt: an outage says nothing about the note.
MAX_ENRICH_ATTEMPTS = 3
Progress = Callable[[int, int], None]
#: An episode's call is shown at most this many older notes (the best of its turns' neighbours).
EPISODE_RELATED = 6
STOPPED = "stopped before the end (shutting down); the rest stays pending"
#: inside ``store_new_pending``: the stored copies of the group's contents, read under its locks (each
#: ``store_pending`` of the group then needs no query of its own)
_group_twins: ContextVar[dict[str, Note] | None] = ContextVar("group_twins", default=None)


def neighbours_of(mem: Memory, vector: Vectors, note: Note) -> list[write.Candidate]:
    active = Filters(statuses=[NoteStatus.active])  # archived and merged notes are not linked to
    found = mem.store.nearest(vector, mem.link_k, note.scope, active, exclude=[note.id])
    found = [(nid, sim) for nid, sim in found if sim >= mem.link_floor]
    notes = mem.store.get_notes([nid for nid, _ in found])
    return write.make_candidates([(notes[nid], sim) for nid, sim in found if nid in notes])


def enrich_one(mem: Memory, note: Note, base: Vectors, is_new: bool, incoming: Sequence[Link] = ()) -> Note:
    return _enrich(mem, note, base, is_new, incoming)[0]


def _enrich(
    mem: Memory, note: Note, base: Vectors, is_new: bool, incoming: Sequence[Link] = ()
) -> tuple[Note, CallFailed | None]:
    """The note as stored, and the failed call when the LLM gave nothing usable (it is then pending)."""
    try:
        if mem.settings.pipeline == "paper":

            def finder(enriched: Note) -> list[write.Candidate]:
                vec = mem.embedder.embed_documents([enriched.embedding_text()])[0]
                return neighbours_of(mem, vec, enriched)

            decision = write.construct_paper(mem.runner, note, finder, mem.evolve_floor, mem.checks)
        else:
            candidates = neighbours_of(mem, base, note)
            decision = write.construct_one(mem.runner, note, candidates, mem.evolve_floor, mem.checks)
    except CallFailed as exc:
        if not exc.unreachable:
            note.enrich_attempts += 1
        if not incoming:
            return store_pending(mem, note, base, exc.call, is_new=is_new), exc
        with mem.store.atomic():
            twins = lock_twins(mem, [note]) if is_new else []
            live = mem.store.get_notes(twins + [lk.source_id for lk in incoming])  # every lock, in one read
            stored = store_pending(mem, note, base, exc.call, is_new=is_new)
            link_in(mem, stored, incoming, live)
        return stored, exc
    return apply(mem, note, decision, is_new, incoming), None


def enrich_batch(mem: Memory, group: list[Note], bases: Vectors) -> list[Note]:
    candidates = write.pool_candidates(
        [neighbours_of(mem, base, note) for note, base in zip(group, bases, strict=True)],
        mem.link_k + len(group),
    )
    try:
        decisions = write.construct_batch(mem.runner, group, candidates, mem.evolve_floor, mem.checks)
    except CallFailed as exc:
        if exc.unreachable:  # no point asking again note by note: keep them all pending
            return store_new_pending(mem, group, bases, exc.call)
        decisions = {}
    out = []
    in_batch = {n.id for n in group}
    stored: dict[str, str] = {}  # note of this batch -> the note it is stored as (a duplicate may fold)
    waiting: dict[str, list[Link]] = {}  # links to notes of this batch not stored yet, by target
    for note, base in zip(group, bases, strict=True):
        incoming = waiting.pop(note.id, [])
        decision = decisions.get(note.id)
        if decision is None:  # left out of the batch answer: give it its own call
            done = enrich_one(mem, note, base, True, incoming)
        else:
            # a link between notes of this batch is written with whichever end is stored last (the notes
            # are stored in order): a crash between the two transactions never loses it for good
            ahead = [(t, r) for t, r in decision.links if t in in_batch and t not in stored]
            decision.links = [
                (stored.get(t, t), r) for t, r in decision.links if t not in in_batch or t in stored
            ]
            done = apply(mem, note, decision, True, incoming)
            for target, reason in ahead:
                link = Link(
                    source_id=done.id, target_id=target, reason=reason, llm_call_id=decision.call_ids[0]
                )
                waiting.setdefault(target, []).append(link)
        stored[note.id] = done.id
        out.append(done)
    return out


def lock_twins(mem: Memory, notes: Sequence[Note]) -> list[str]:
    """Inside the write transaction, before any other read: lock the notes' (scope, content hash) pairs
    (PostgreSQL; SQLite's write transactions are serial) and return the ids of stored notes sharing a
    content with one of them. One scope for all (a memory writes in its own). Nothing with dedupe off."""
    if not mem.settings.dedupe or not notes:
        return []
    scope, hashes = notes[0].scope, sorted({n.content_hash for n in notes})
    mem.store.lock_hashes(scope, hashes)
    return sorted({i for ids in mem.store.find_by_hashes(scope, hashes).values() for i in ids})


def twin_of(note: Note, live: dict[str, Note]) -> Note | None:
    """The oldest active note among ``live`` with ``note``'s content in its exact scope."""
    same = [
        n
        for n in live.values()
        if n.content_hash == note.content_hash
        and n.scope == note.scope
        and n.status == NoteStatus.active
        and n.id != note.id
    ]
    return min(same, key=lambda n: (n.ingest_time, n.id)) if same else None


def fold(mem: Memory, note: Note, hint: Note) -> Note | None:
    """``note`` repeats ``hint``, read before any transaction: fold it in (provenance, pin, expiry) under
    the lock, into the twin stored then; None when there is none any more (merged or deleted meanwhile:
    the caller stores the note after all)."""
    if not upkeep.adds_to(hint, note):
        return hint  # nothing to write
    with mem.store.atomic():
        twin = twin_of(note, mem.store.get_notes(lock_twins(mem, [note])))
        return None if twin is None else upkeep.fold_duplicate(mem, twin, note)


def store_new_pending(mem: Memory, notes: list[Note], bases: Vectors, call: LLMCall | None) -> list[Note]:
    """New notes stored pending in one transaction (no LLM, or it was unreachable); each one a copy of
    a stored note is folded into it instead. All the locks are taken before the first insert."""
    with mem.store.atomic():
        token = _group_twins.set(mem.store.get_notes(lock_twins(mem, notes)))
        try:
            return [store_pending(mem, n, b, call) for n, b in zip(notes, bases, strict=True)]
        finally:
            _group_twins.reset(token)


def store_pending(mem: Memory, note: Note, base: Vectors, call: LLMCall | None, is_new: bool = True) -> Note:
    """Keep the note with its content embedding, waiting for ``enrich``; ``call`` is the failed call, if
    any (the caller has counted the attempt, when it was one). A new note that repeats a stored one is
    folded into it."""
    if call is not None:
        note.last_error = call.error
        log.warning("note %s stored as pending: %s", note.id, call.error)
    note.state = EnrichState.failed if note.enrich_attempts >= MAX_ENRICH_ATTEMPTS else EnrichState.pending
    note.updated_at = utcnow()
    with mem.store.atomic():
        if is_new:
            twins = _group_twins.get()
            twin = twin_of(note, mem.store.get_notes(lock_twins(mem, [note])) if twins is None else twins)
            if twin is not None:
                return upkeep.fold_duplicate(mem, twin, note)
            mem.store.insert_note(note, base)
            cause, call_id = VersionCause.create, call.id if call else None
            upkeep.write_version(mem.store, note, cause, call_id, "stored pending", new=True)
        else:
            current = mem.store.get_note(note.id)
            if current is None:
                raise NotFound(f"note {note.id} was deleted while it was being enriched")
            # attempts and error only, on the stored note: an edit made meanwhile is kept
            note = current.model_copy(
                update={
                    "enrich_attempts": note.enrich_attempts,
                    "last_error": note.last_error,
                    "state": note.state if current.version == note.version else current.state,
                    "updated_at": note.updated_at,
                }
            )
            mem.store.update_note(note)  # not a content change: no version
    return note


def apply(
    mem: Memory, note: Note, decision: write.Decision, is_new: bool, incoming: Sequence[Link] = ()
) -> Note:
    """Write the note, its links (and ``incoming``: links to it from notes of its batch stored before
    it) and the neighbour updates in one transaction. A new note whose content was stored meanwhile by
    another writer is folded into that note instead."""
    call_id = decision.call_ids[-1] if decision.call_ids else None
    note.keywords, note.tags, note.context = decision.keywords, decision.tags, decision.context
    note.state, note.last_error = EnrichState.enriched, None
    note.updated_at = utcnow()
    neighbours = mem.store.get_notes([u.note_id for u in decision.updates])
    changed: list[Note] = []
    for update in decision.updates:
        old = neighbours.get(update.note_id)
        if old is None or (old.context == update.context and old.tags == update.tags):
            continue
        changed.append(
            old.model_copy(
                update={
                    "context": update.context,
                    "tags": update.tags or old.tags,
                    "updated_at": utcnow(),
                }
            )
        )
    texts = [note.embedding_text()] + [n.embedding_text() for n in changed]
    vectors = mem.embedder.embed_documents(texts)
    with mem.store.atomic():
        # the (scope, content) lock first, then one read takes every row lock this write needs, in id
        # order (no deadlock between writers)
        own = lock_twins(mem, [note]) if is_new else [note.id]
        sources = [lk.source_id for lk in incoming]
        live = mem.store.get_notes(
            own + sources + [t for t, _ in decision.links] + [n.id for n in changed] + decision.supersedes
        )
        if is_new and mem.settings.dedupe and (twin := twin_of(note, live)) is not None:
            folded = upkeep.fold_duplicate(mem, twin, note)  # stored by another writer meanwhile
            link_in(mem, folded, incoming, live)
            return folded
        if is_new:
            mem.store.insert_note(note, vectors[0])
        else:
            current = live.get(note.id)
            if current is None:
                raise NotFound(f"note {note.id} was deleted while it was being enriched")
            if current.version != note.version:
                # edited or evolved while the LLM worked on the older text: keep that change
                # (`enrich_pending` tries the newer version once more)
                return current
            note.version = current.version + 1
            mem.store.update_note(note, vectors[0])
        link(mem, note, decision, live, call_id, is_new)
        cause = VersionCause.create if is_new else VersionCause.enrich
        upkeep.write_version(mem.store, note, cause, call_id)
        for nb, vec in zip(changed, vectors[1:], strict=True):
            current = live.get(nb.id)
            if current is None or current.version != nb.version:
                continue  # changed or deleted meanwhile: never overwrite a newer version
            nb.version += 1
            mem.store.update_note(nb, vec)
            upkeep.write_version(mem.store, nb, VersionCause.evolve, call_id, f"evolved by note {note.id}")
        for old_id in decision.supersedes:
            old = live.get(old_id)
            if old is not None and old.scope == note.scope and old.status == NoteStatus.active:
                upkeep.supersede(mem, old, note.id, "the LLM found it replaced", call_id)
        link_in(mem, note, incoming, live)
    mem.tag_stats.added(note.scope, note.tags)
    return note


def link(
    mem: Memory,
    note: Note,
    decision: write.Decision,
    live: dict[str, Note],
    call_id: str | None,
    is_new: bool,
) -> None:
    """The decision's links; one that exists already was re-confirmed by the LLM and grows stronger."""
    existing = (
        {}
        if is_new
        else {lk.target_id: lk for lk in mem.store.links_for([note.id]) if lk.source_id == note.id}
    )
    policy = lifecycle.Policy.from_settings(mem.settings)
    now = utcnow()
    mem.store.upsert_links(
        [
            lifecycle.strengthened(existing[target], 1, now, policy, lifecycle.CONFIRM_STEP)
            if target in existing
            else Link(source_id=note.id, target_id=target, reason=reason, llm_call_id=call_id)
            for target, reason in decision.links
            if target in live and target != note.id
        ]
    )


def link_in(mem: Memory, target: Note, incoming: Sequence[Link], live: dict[str, Note]) -> None:
    """Links to ``target`` from notes of its batch stored before it (``live``: read and locked in this
    transaction), each source getting a version that records its new link."""
    links = [
        lk.model_copy(update={"target_id": target.id})
        for lk in incoming
        if lk.source_id in live and lk.source_id != target.id
    ]
    if not links:
        return
    mem.store.upsert_links(links)
    for source in mem.store.get_notes(sorted({lk.source_id for lk in links})).values():  # as changed now
        upkeep.change(mem, source, VersionCause.enrich, "linked to a later note of its batch")


def episode_rules(mem: Memory) -> episode.Rules:
    return episode.Rules(max_turns=mem.settings.episode_turns, shift=mem.settings.episode_shift)


def enrich_episodes(
    mem: Memory,
    notes: Sequence[Note],
    bases: Vectors,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[list[Note], str | None]:
    """Stored notes, in order, enriched one call per episode. Stops at a call that could not reach the
    provider, or when ``stop()`` says so; the notes not tried are returned as they were (pending) with
    the reason it stopped."""
    out: list[Note] = []
    for idx in episode.segment(notes, bases, episode_rules(mem)):
        if stop is not None and stop():
            return out + list(notes[len(out) :]), STOPPED
        done, failure = enrich_episode(mem, [notes[i] for i in idx], bases[idx])
        out.extend(done)
        if progress:
            progress(len(out), len(notes))
        if failure is not None and failure.unreachable:
            left = len(notes) - len(out)
            return out + list(notes[len(out) :]), (
                f"the LLM provider was unreachable ({failure.call.error}); {left} more note(s) were not "
                "tried: run enrich again once it is back"
            )
    return out, None


def episode_candidates(
    mem: Memory, group: Sequence[Note], bases: Vectors
) -> tuple[list[write.Candidate], dict[str, str]]:
    """The enriched notes closest to any turn of the episode (a pending one, maybe a later turn of the
    same load, is not shown yet), each at its best similarity, best first; and for each, the id of the
    turn it is closest to (what links to it)."""
    enriched = Filters(statuses=[NoteStatus.active], states=[EnrichState.enriched])
    ids = [n.id for n in group]
    best: dict[str, tuple[float, str]] = {}
    for note, base in zip(group, bases, strict=True):
        for nid, sim in mem.store.nearest(base, mem.link_k, note.scope, enriched, exclude=ids):
            if sim >= mem.link_floor and sim > best.get(nid, (-1.0, ""))[0]:
                best[nid] = (sim, note.id)
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:EPISODE_RELATED]
    stored = mem.store.get_notes([nid for nid, _ in ranked])
    found = [(stored[nid], sim) for nid, (sim, _) in ranked if nid in stored]
    return write.make_candidates(found), {nid: turn for nid, (_, turn) in ranked}


def enrich_episode(mem: Memory, group: list[Note], bases: Vectors) -> tuple[list[Note], CallFailed | None]:
    """One episode of stored notes: one call, then each turn written in its own transaction (a turn
    edited meanwhile keeps the edit). On failure every turn stays pending, its attempt counted."""
    candidates, closest = episode_candidates(mem, group, bases)
    try:
        decisions = episode.construct(mem.runner, group, candidates, mem.evolve_floor, mem.checks, closest)
    except CallFailed as exc:
        for note in group:
            if not exc.unreachable:
                note.enrich_attempts += 1
        kept = []
        for note, base in zip(group, bases, strict=True):
            try:
                kept.append(store_pending(mem, note, base, exc.call, is_new=False))
            except NotFound:
                kept.append(note)  # deleted meanwhile
        return kept, exc
    out = []
    for note in group:
        try:
            out.append(apply(mem, note, decisions[note.id], is_new=False))
        except NotFound:
            out.append(note)  # deleted meanwhile
    return out, None


def _enrich_current(mem: Memory, note: Note) -> tuple[Note, CallFailed | None]:
    """Enrich a stored note; if it was edited while the LLM worked on the older text (the answer is not
    written over the edit), once more on the newer version rather than leaving it pending."""
    done: Note = note
    failure: CallFailed | None = None
    for _ in range(2):
        base = mem.embedder.embed_documents([note.embedding_text()])[0]
        done, failure = _enrich(mem, note, base, is_new=False)
        if failure is not None or done.state != EnrichState.pending or done.version == note.version:
            break
        note = done
    return done, failure


def enrich_pending(
    mem: Memory,
    limit: int | None,
    include_failed: bool,
    progress: Progress | None,
    stop: Callable[[], bool] | None = None,
) -> EnrichReport:
    """``Memory.enrich``: each pending note in turn, oldest first, until the provider is unreachable
    (or ``stop()`` says so: a background worker shutting down)."""
    states = [EnrichState.pending] + ([EnrichState.failed] if include_failed else [])
    todo = mem.store.list_notes(mem.scope, Filters(states=states), limit=limit or 1_000_000)
    todo.reverse()  # oldest first, like the original order of arrival
    report = EnrichReport()

    def count(state: EnrichState) -> None:
        if state == EnrichState.enriched:
            report.enriched += 1
        elif state == EnrichState.failed:
            report.failed += 1
        else:
            report.still_pending += 1

    if mem.settings.pipeline == "episode":
        return _pending_episodes(mem, todo, states, include_failed, progress, stop, count, report)
    for i, listed in enumerate(todo, start=1):
        if stop is not None and stop():
            report.still_pending += len(todo) - i + 1
            report.stopped = "stopped before the end (shutting down); the rest stays pending"
            break
        note = mem.store.get_note(listed.id)  # re-read: enriching an earlier note may evolve this one
        if note is None or note.state not in states:
            continue
        if include_failed and note.state == EnrichState.failed:
            note.enrich_attempts = 0
        try:
            done, failure = _enrich_current(mem, note)
        except NotFound:
            continue  # deleted meanwhile: nothing left to enrich
        count(done.state)
        if progress:
            progress(i, len(todo))
        if failure is not None and failure.unreachable:  # asking about the next note would fail too
            rest = todo[i:]
            for left in rest:
                count(left.state)
            report.stopped = (
                f"the LLM provider was unreachable ({failure.call.error}); {len(rest)} more note(s) were "
                "not tried: run enrich again once it is back"
            )
            break
    return report


def _pending_episodes(
    mem: Memory,
    todo: list[Note],
    states: list[EnrichState],
    include_failed: bool,
    progress: Progress | None,
    stop: Callable[[], bool] | None,
    count: Callable[[EnrichState], None],
    report: EnrichReport,
) -> EnrichReport:
    """``enrich`` with the episode pipeline: each scope's pending notes in order of arrival, cut into
    episodes, a chunk at a time (re-read first: an earlier episode may have evolved one)."""
    scopes: dict[tuple[str | None, ...], list[str]] = {}
    for note in todo:
        scopes.setdefault((note.scope.user_id, note.scope.agent_id, note.scope.run_id), []).append(note.id)
    done = 0
    for ids in scopes.values():
        for start in range(0, len(ids), 64):
            current = mem.store.get_notes(ids[start : start + 64])
            notes = [n for i in ids[start : start + 64] if (n := current.get(i)) and n.state in states]
            for note in notes:
                if include_failed and note.state == EnrichState.failed:
                    note.enrich_attempts = 0
            bases = mem.embedder.embed_documents([n.embedding_text() for n in notes])

            def step(i: int, _total: int, base: int = done) -> None:
                if progress:
                    progress(base + i, len(todo))

            out, stopped = enrich_episodes(mem, notes, bases, step, stop)
            for note in out:
                count(note.state)
            done += len(out)
            if stopped:
                rest = [i for more in scopes.values() for i in more]
                report.still_pending += max(0, len(rest) - done)
                report.stopped = stopped
                return report
    return report
