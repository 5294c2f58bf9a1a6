"""Changes to notes that are not the LLM's write pipeline: merge, supersede, archive, pin, restore, and
the usage signals (retrieval counts, link strengthening) that search feeds back.

Every change writes a version of each note it touches, with the note's outgoing links in the snapshot,
so any change can be undone by restoring the version before it (``restore``), one note or a whole
consolidation run (``batch``). Callers hold no transaction; each function is one.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from .errors import InvalidInput, NotFound, StoreError
from .notes import Link, Note, NoteStatus, NoteVersion, SearchHit, VersionCause, content_hash, utcnow
from .steps import lifecycle

if TYPE_CHECKING:
    from .memory import Memory
    from .store import Store


def write_version(
    store: Store,
    note: Note,
    cause: VersionCause,
    call_id: str | None = None,
    detail: str = "",
    batch: str | None = None,
    new: bool = False,
) -> None:
    """A version of ``note`` as stored now, with its outgoing links (call inside the transaction). A note
    just inserted has none yet: ``new`` spares the query (bulk loads write one version per note)."""
    links = [] if new else [lk for lk in store.links_for([note.id]) if lk.source_id == note.id]
    store.add_version(NoteVersion.snapshot(note, cause, call_id, detail, links=links, batch=batch))


def add_links(mem: Memory, links: Sequence[Link], cause: VersionCause, detail: str) -> None:
    """Store links (both ends must exist) and a version of each source, so that its version history
    always holds its outgoing links (restoring an older version can then put them back)."""
    with mem.store.atomic():
        notes = mem.store.get_notes(sorted({lk.source_id for lk in links} | {lk.target_id for lk in links}))
        keep = [lk for lk in links if lk.source_id in notes and lk.target_id in notes]
        mem.store.upsert_links(keep)
        for source_id in sorted({lk.source_id for lk in keep}):
            change(mem, notes[source_id], cause, detail)  # a version that records the new links


def _save(mem: Memory, note: Note, reembed: bool) -> None:
    vector = mem.embedder.embed_documents([note.embedding_text()])[0] if reembed else None
    mem.store.update_note(note, vector)


def _fresh(mem: Memory, note_id: str, expected: int | None = None) -> Note:
    """The note as stored now (inside a transaction: locked on PostgreSQL); refuses a stale copy."""
    current = mem.store.get_notes([note_id]).get(note_id)
    if current is None:
        raise NotFound(f"note {note_id} was deleted meanwhile; nothing was changed")
    if expected is not None and current.version != expected:
        raise StoreError(f"note {note_id} changed while this ran; read it again and retry")
    return current


def change(
    mem: Memory,
    note: Note,
    cause: VersionCause,
    detail: str,
    batch: str | None = None,
    **fields: object,
) -> Note:
    """Set plain fields (status, pin, expiry, superseded_by; none: only its links changed) on a note as
    a new version. Inside a caller's transaction it joins it."""
    with mem.store.atomic():
        current = _fresh(mem, note.id, note.version)
        new = current.model_copy(update={**fields, "version": current.version + 1, "updated_at": utcnow()})
        mem.store.update_note(new)  # status and pins are not in the embedded text: same vector
        write_version(mem.store, new, cause, None, detail, batch)
    return new


def merge(
    mem: Memory, survivor: Note, absorbed: Note, detail: str, call_id: str | None, batch: str | None
) -> Note:
    """Fold ``absorbed`` into ``survivor``: provenance, attributes, links re-pointed (both directions),
    notes superseded by the absorbed one now superseded by the survivor; the absorbed note stays, status
    ``merged``, readable with its history. One transaction; every touched note gets a version."""
    if survivor.id == absorbed.id:
        raise InvalidInput("a note cannot be merged into itself")
    if survivor.scope != absorbed.scope:
        raise InvalidInput("notes of different scopes are never merged")
    now = utcnow()
    with mem.store.atomic():
        s = _fresh(mem, survivor.id, survivor.version)
        a = _fresh(mem, absorbed.id, absorbed.version)
        if s.status != NoteStatus.active or a.status != NoteStatus.active:
            raise StoreError("only active notes are merged; restore the note first")
        new_s = lifecycle.merged(s, a, now)
        links = mem.store.links_for([a.id])
        existing = {(lk.source_id, lk.target_id): lk for lk in mem.store.links_for([s.id])}
        moved: dict[tuple[str, str], Link] = {}
        touched: set[str] = set()
        for lk in links:
            src = s.id if lk.source_id == a.id else lk.source_id
            dst = s.id if lk.target_id == a.id else lk.target_id
            if src == dst:
                continue
            old = existing.get((src, dst)) or moved.get((src, dst))
            weight = max(lk.weight, old.weight) if old else lk.weight
            used = max(lk.updated_at, old.updated_at) if old else lk.updated_at  # a merge is not a use
            moved[(src, dst)] = (old or lk).model_copy(
                update={"source_id": src, "target_id": dst, "weight": weight, "updated_at": used}
            )
            if old is None:  # a new edge: it did not exist before the merge, so undo removes it
                moved[(src, dst)].created_at = now
            touched.add(src)
        mem.store.delete_links([(lk.source_id, lk.target_id) for lk in links])
        mem.store.upsert_links(list(moved.values()))
        _save(
            mem, new_s, reembed=(new_s.keywords, new_s.tags, new_s.context) != (s.keywords, s.tags, s.context)
        )
        write_version(mem.store, new_s, VersionCause.merge, call_id, f"absorbed note {a.id}: {detail}", batch)
        new_a = a.model_copy(
            update={
                "status": NoteStatus.merged,
                "merged_into": s.id,
                "version": a.version + 1,
                "updated_at": now,
            }
        )
        mem.store.update_note(new_a)
        write_version(
            mem.store, new_a, VersionCause.merge, call_id, f"merged into note {s.id}: {detail}", batch
        )
        others = mem.store.get_notes(sorted(touched - {s.id}))
        for other in others.values():
            pointer = s.id if other.superseded_by == a.id else other.superseded_by
            moved_detail = f"link to {a.id} now points to {s.id}"
            change(mem, other, VersionCause.merge, moved_detail, batch, superseded_by=pointer)
    return new_s


def supersede(
    mem: Memory, old: Note, new_id: str, reason: str, call_id: str | None, batch: str | None = None
) -> Note:
    """Mark ``old`` as replaced by ``new_id`` and link it there (search then prefers the newer note and
    reaches it from the old one); both stay in history."""
    now = utcnow()
    with mem.store.atomic():
        current = _fresh(mem, old.id)
        if current.superseded_by == new_id:
            return current
        mem.store.upsert_links(
            [
                Link(
                    source_id=old.id,
                    target_id=new_id,
                    weight=lifecycle.SUPERSEDE_WEIGHT,
                    reason=f"superseded: {reason}" if reason else "superseded by a newer note",
                    created_at=now,
                    updated_at=now,
                    llm_call_id=call_id,
                )
            ]
        )
        new = current.model_copy(
            update={"superseded_by": new_id, "version": current.version + 1, "updated_at": now}
        )
        mem.store.update_note(new)
        write_version(
            mem.store, new, VersionCause.supersede, call_id, f"superseded by note {new_id}: {reason}", batch
        )
    return new


def restore(
    mem: Memory,
    note_id: str,
    version: int,
    batch: str | None = None,
    detail: str = "",
    links_after: datetime | None = None,
) -> Note:
    """Put a note back as it was at ``version``: text, attributes, status, pin, provenance and (when the
    version recorded them) its outgoing links: links made after that version (or after ``links_after``:
    an undo passes the start of the run it undoes) go, links it had come back. Written as a new version,
    so the restore itself can be undone the same way."""
    versions = {v.version: v for v in mem.store.versions(note_id)}
    old = versions.get(version)
    if old is None:
        raise NotFound(f"note {note_id} has no version {version}; `amem history {note_id}` lists them")
    now = utcnow()
    with mem.store.atomic():
        current = _fresh(mem, note_id)
        fields = old.model_dump(include=NoteVersion.SNAPSHOT_FIELDS - {"links"})
        new = current.model_copy(
            update={
                **fields,
                "content_hash": content_hash(old.content),
                "version": current.version + 1,
                "updated_at": now,
            }
        )
        new = Note.model_validate(new.model_dump())
        if old.links is not None:
            mine = [lk for lk in mem.store.links_for([note_id]) if lk.source_id == note_id]
            kept = {ls.target_id for ls in old.links}
            mem.store.delete_links(
                [
                    (lk.source_id, lk.target_id)
                    for lk in mine
                    if lk.target_id not in kept and _newer(lk, old.created_at, links_after)
                ]
            )
            have = {lk.target_id for lk in mine}
            targets = mem.store.get_notes([ls.target_id for ls in old.links if ls.target_id not in have])
            mem.store.upsert_links(
                [
                    Link(
                        source_id=note_id,
                        target_id=ls.target_id,
                        weight=ls.weight,
                        reason=ls.reason,
                        created_at=ls.created_at,
                        updated_at=now,  # put back by hand: its decay starts again
                        llm_call_id=ls.llm_call_id,
                    )
                    for ls in old.links
                    if ls.target_id in targets and targets[ls.target_id].scope == new.scope
                ]
            )
        _save(mem, new, reembed=True)
        write_version(
            mem.store, new, VersionCause.restore, None, detail or f"restored version {version}", batch
        )
    return new


def _newer(link: Link, version_time: datetime, links_after: datetime | None) -> bool:
    """Was the link made after the state being restored?"""
    return link.created_at >= links_after if links_after is not None else link.created_at > version_time


class Usage:
    """Search feedback, buffered: retrieval counts per note and co-retrieval counts per link, written
    every ``every`` searches or ``seconds`` (and on close), so a search is not a write transaction.
    Shared by a Memory and its scoped views; safe across threads."""

    def __init__(self, every: int = 64, seconds: float = 30.0) -> None:
        self.every, self.seconds = every, seconds
        self._lock = threading.Lock()
        self._notes: Counter[str] = Counter()
        self._links: Counter[tuple[str, str]] = Counter()
        self._searches = 0
        self._since = time.monotonic()

    def record(self, hits: Sequence[SearchHit], links: Sequence[Link]) -> bool:
        """Count one search; True when it is time to flush."""
        returned = {h.note.id for h in hits}
        with self._lock:
            self._notes.update(returned)
            self._links.update(
                (lk.source_id, lk.target_id)
                for lk in links
                if lk.source_id in returned and lk.target_id in returned
            )
            self._searches += 1
            return self._searches >= self.every or time.monotonic() - self._since >= self.seconds

    def flush(self, mem: Memory, now: datetime | None = None) -> None:
        with self._lock:
            notes, links = dict(self._notes), dict(self._links)
            self._notes.clear()
            self._links.clear()
            self._searches, self._since = 0, time.monotonic()
        if not notes:
            return
        now = now or utcnow()
        policy = lifecycle.Policy.from_settings(mem.settings)
        with mem.store.atomic():
            mem.store.record_retrievals(notes, now)
            if links:
                current = {
                    (lk.source_id, lk.target_id): lk
                    for lk in mem.store.links_for(sorted({s for s, _ in links}))
                }
                mem.store.upsert_links(
                    [
                        lifecycle.strengthened(current[pair], n, now, policy, lifecycle.CO_RETRIEVAL_STEP)
                        for pair, n in links.items()
                        if pair in current
                    ]
                )


def find_duplicate(mem: Memory, note: Note) -> Note | None:
    """An active note of the same exact scope with the same normalised content, oldest first."""
    return find_duplicates(mem, [note]).get(note.content_hash)


def find_duplicates(mem: Memory, notes: Sequence[Note]) -> dict[str, Note]:
    """content hash -> the oldest active stored note with it, for new notes of one exact scope (one
    query per 500-1,000 hashes: a bulk load must not pay a query per note)."""
    if not notes:
        return {}
    found = mem.store.find_by_hashes(notes[0].scope, [n.content_hash for n in notes])
    stored = mem.store.get_notes([i for ids in found.values() for i in ids])
    out: dict[str, Note] = {}
    for digest, ids in found.items():
        live = [stored[i] for i in ids if i in stored and stored[i].status == NoteStatus.active]
        if live:
            out[digest] = min(live, key=lambda n: (n.ingest_time, n.id))
    return out


def fold_duplicate(mem: Memory, existing: Note, new: Note) -> Note:
    """An exact duplicate was written: no new note and no LLM call. When it brings metadata the note does
    not have yet (another turn, another source), that joins the note's sources (with its event time) as
    a version; a pin or a later expiry carries over. Writing the same thing twice changes nothing."""
    folded = _folding(existing, new)
    if folded is None:
        return existing
    fresh_source, expiry = folded
    source = lifecycle.source_of(new, with_content=False)
    source["note_id"] = None  # never stored as a note of its own
    sources = [*existing.sources, source] if fresh_source else existing.sources
    detail = "an exact duplicate was written" + (" with another provenance" if fresh_source else "")
    return change(
        mem,
        existing,
        VersionCause.duplicate,
        detail,
        None,
        sources=sources,
        pinned=existing.pinned or new.pinned,
        expires_at=expiry,
    )


def adds_to(existing: Note, new: Note) -> bool:
    """Would folding the duplicate ``new`` into ``existing`` change it (provenance, pin or expiry)?"""
    return _folding(existing, new) is not None


def _folding(existing: Note, new: Note) -> tuple[bool, datetime | None] | None:
    """What folding ``new`` into ``existing`` brings: whether its metadata is a source the note does not
    have yet, and the expiry the note keeps (the later of the two; none wins: a copy without expiry keeps
    the note). None when folding would change nothing."""
    fresh_source = new.metadata not in existing.all_metadata()
    if existing.expires_at is None or new.expires_at is None:
        expiry = None
    else:
        expiry = max(existing.expires_at, new.expires_at)
    if fresh_source or (new.pinned and not existing.pinned) or expiry != existing.expires_at:
        return fresh_source, expiry
    return None
