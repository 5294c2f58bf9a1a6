"""The write pipeline's storage side: find a new note's neighbours, run the LLM step, and write the
note, its links, evolved neighbours and superseded notes in one transaction (or keep it pending).

``Memory`` owns validation and batching and calls these; the decisions themselves are pure
(``steps/write.py``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import upkeep
from .embed.base import Vectors
from .errors import NotFound
from .llm.runner import CallFailed
from .notes import EnrichState, Link, LLMCall, Note, NoteStatus, VersionCause, utcnow
from .steps import lifecycle, write
from .store import Filters

if TYPE_CHECKING:
    from .memory import Memory

log = logging.getLogger("amem")
#: After this many failed enrichment attempts a note is marked ``failed`` (still stored and searchable).
MAX_ENRICH_ATTEMPTS = 3


def neighbours_of(mem: Memory, vector: Vectors, note: Note) -> list[write.Candidate]:
    active = Filters(statuses=[NoteStatus.active])  # archived and merged notes are not linked to
    found = mem.store.nearest(vector, mem.link_k, note.scope, active, exclude=[note.id])
    found = [(nid, sim) for nid, sim in found if sim >= mem.link_floor]
    notes = mem.store.get_notes([nid for nid, _ in found])
    return write.make_candidates([(notes[nid], sim) for nid, sim in found if nid in notes])


def enrich_one(mem: Memory, note: Note, base: Vectors, is_new: bool) -> Note:
    try:
        if mem.settings.pipeline == "paper":

            def finder(enriched: Note) -> list[write.Candidate]:
                vec = mem.embedder.embed_documents([enriched.embedding_text()])[0]
                return neighbours_of(mem, vec, enriched)

            decision = write.construct_paper(mem.runner, note, finder, mem.evolve_floor)
        else:
            decision = write.construct_one(mem.runner, note, neighbours_of(mem, base, note), mem.evolve_floor)
    except CallFailed as exc:
        return store_pending(mem, note, base, exc.call, is_new=is_new)
    return apply(mem, note, decision, is_new)


def enrich_batch(mem: Memory, group: list[Note], bases: Vectors) -> list[Note]:
    candidates = write.pool_candidates(
        [neighbours_of(mem, base, note) for note, base in zip(group, bases, strict=True)],
        mem.link_k + len(group),
    )
    try:
        decisions = write.construct_batch(mem.runner, group, candidates, mem.evolve_floor)
    except CallFailed as exc:
        if exc.unreachable:  # no point asking again note by note: keep them all pending
            with mem.store.atomic():
                return [store_pending(mem, n, b, exc.call) for n, b in zip(group, bases, strict=True)]
        decisions = {}
    out = []
    group_ids = {n.id for n in group}
    later: list[Link] = []
    for note, base in zip(group, bases, strict=True):
        decision = decisions.get(note.id)
        if decision is None:  # left out of the batch answer: give it its own call
            out.append(enrich_one(mem, note, base, is_new=True))
            continue
        # links between notes of this batch wait until the whole batch is stored
        later.extend(
            Link(source_id=note.id, target_id=t, reason=r, llm_call_id=decision.call_ids[0])
            for t, r in decision.links
            if t in group_ids and t != note.id
        )
        decision.links = [(t, r) for t, r in decision.links if t not in group_ids]
        out.append(apply(mem, note, decision, True))
    if later:
        upkeep.add_links(mem, later, VersionCause.enrich, "linked to notes of its batch")
    return out


def store_pending(mem: Memory, note: Note, base: Vectors, call: LLMCall | None, is_new: bool = True) -> Note:
    if call is not None:
        note.enrich_attempts += 1
        note.last_error = call.error
        log.warning("note %s stored as pending: %s", note.id, call.error)
    note.state = EnrichState.failed if note.enrich_attempts >= MAX_ENRICH_ATTEMPTS else EnrichState.pending
    note.updated_at = utcnow()
    with mem.store.atomic():
        if is_new:
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


def apply(mem: Memory, note: Note, decision: write.Decision, is_new: bool) -> Note:
    """Write the note, its links and the neighbour updates in one transaction."""
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
        # one read takes every lock this write needs, in id order (no deadlock between writers)
        own = [] if is_new else [note.id]
        live = mem.store.get_notes(
            own + [t for t, _ in decision.links] + [n.id for n in changed] + decision.supersedes
        )
        if is_new:
            mem.store.insert_note(note, vectors[0])
        else:
            current = live.get(note.id)
            if current is None:
                raise NotFound(f"note {note.id} was deleted while it was being enriched")
            if current.version != note.version:
                # edited or evolved while the LLM worked on the older text: keep that change, and let
                # a later `enrich` look at the note again if it is still pending
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
