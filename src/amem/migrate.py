"""`amem migrate SRC DST`: copy a whole memory between stores (SQLite <-> PostgreSQL), then verify it.

Notes go over in batches, each batch one transaction in the destination (notes with their vectors,
versions and LLM calls); links follow once every note is there, since both ends must exist. A rerun after
an interruption skips what is already copied. The LLM response cache is not copied: it is a cache.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from pydantic import BaseModel

from .errors import InvalidInput, StoreError
from .notes import Scope
from .store import Store, open_store

Progress = Callable[[int, int], None]
BarFactory = Callable[[str, int], AbstractContextManager[Progress]]
_EVERYTHING = Scope()  # no field set: every note of every user, agent and run


class MigrateReport(BaseModel):
    notes: int = 0
    links: int = 0
    versions: int = 0
    llm_calls: int = 0
    updated_notes: int = 0
    skipped_notes: int = 0
    source: dict[str, int] = {}
    destination: dict[str, int] = {}


def _counts(store: Store) -> dict[str, int]:
    stats = store.stats()
    return {key: int(stats[key]) for key in ("notes", "links", "versions", "llm_calls")}


def _check_compatible(src: Store, dst: Store) -> None:
    for key in ("embedding_model", "dimensions"):
        theirs, ours = src.get_meta(key), dst.get_meta(key)
        if theirs is not None and ours is not None and theirs != ours:
            raise InvalidInput(
                f"the source's {key} is {theirs!r} but the destination's is {ours!r}; migrate into an "
                "empty store or one built with the same embedder"
            )


def copy_store(src: Store, dst: Store, progress: Progress | None = None, batch: int = 500) -> MigrateReport:
    _check_compatible(src, dst)
    report = MigrateReport(source=_counts(src))
    total = report.source["notes"]
    model = src.get_meta("embedding_model")
    if model is not None and dst.get_meta("embedding_model") is None:
        dst.set_meta("embedding_model", model)
    ids: list[str] = []

    def flush(chunk: list[str]) -> None:
        notes, vectors = src.get_notes(chunk), src.get_vectors(chunk)
        with dst.atomic():
            present = dst.get_notes(chunk)
            for note_id in chunk:
                note, there = notes[note_id], present.get(note_id)
                if there is None:
                    dst.insert_note(note, vectors[note_id])
                    report.notes += 1
                    have: set[int] = set()
                elif there.model_dump() != note.model_dump():  # changed in the source since the last run
                    dst.update_note(note, vectors[note_id])
                    report.updated_notes += 1
                    have = {v.version for v in dst.versions(note_id)}
                else:
                    report.skipped_notes += 1
                    have = {v.version for v in dst.versions(note_id)}
                for version in src.versions(note_id):
                    if version.version not in have:
                        dst.add_version(version)
                        report.versions += 1

    with dst.bulk(total):  # a large copy into PostgreSQL builds its HNSW index once, at the end
        for note in src.iter_notes(_EVERYTHING, batch=batch):
            ids.append(note.id)
            if len(ids) % batch == 0:
                flush(ids[-batch:])
                if progress:
                    progress(len(ids), total)
        if len(ids) % batch:
            flush(ids[-(len(ids) % batch) :])
    if progress:
        progress(len(ids), total)
    # links once both ends exist; each link is copied with the batch that holds its source
    for start in range(0, len(ids), batch):
        owned = set(ids[start : start + batch])
        links = [lk for lk in src.links_for(list(owned)) if lk.source_id in owned]
        if links:
            dst.upsert_links(links)
            report.links += len(links)
    calls = src.llm_calls(limit=10**9)
    for start in range(0, len(calls), batch):
        with dst.atomic():
            for call in calls[start : start + batch]:
                dst.record_llm_call(call)  # an upsert by id: a rerun rewrites the same record
        report.llm_calls += len(calls[start : start + batch])
    _verify(src, dst, ids, {c.id for c in calls}, batch)
    report.destination = _counts(dst)
    return report


def _verify(src: Store, dst: Store, ids: list[str], call_ids: set[str], batch: int) -> None:
    """Every source note, version, link and LLM call is in the destination, as in the source."""
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        theirs, ours = src.get_notes(chunk), dst.get_notes(chunk)
        for note_id in chunk:
            if note_id not in ours or ours[note_id].version != theirs[note_id].version:
                _fail(f"note {note_id}")
            if {v.version for v in src.versions(note_id)} - {v.version for v in dst.versions(note_id)}:
                _fail(f"versions of note {note_id}")
        owned = set(chunk)
        want = {(lk.source_id, lk.target_id) for lk in src.links_for(chunk) if lk.source_id in owned}
        have = {(lk.source_id, lk.target_id) for lk in dst.links_for(chunk) if lk.source_id in owned}
        if want - have:
            _fail(f"{len(want - have)} link(s)")
    if call_ids - {c.id for c in dst.llm_calls(limit=10**9)}:
        _fail("LLM call records")


def _fail(what: str) -> None:
    raise StoreError(
        f"verification failed: {what} missing or different in the destination; nothing in the source was "
        "changed, rerun the migration to finish the copy"
    )


def migrate(
    src_url: str, dst_url: str, bar: BarFactory | None = None, index_memory: str = "1GB"
) -> MigrateReport:
    """Open both stores by URL (or SQLite path) and copy; ``bar(label, total)`` shows progress."""
    if src_url == dst_url:
        raise InvalidInput("source and destination are the same store")
    src = open_store(src_url)
    try:
        dst = open_store(dst_url, index_memory=index_memory)
        try:
            if bar is None:
                return copy_store(src, dst)
            with bar("migrating notes", src.count_notes(_EVERYTHING)) as progress:
                return copy_store(src, dst, progress)
        finally:
            dst.close()
    finally:
        src.close()
