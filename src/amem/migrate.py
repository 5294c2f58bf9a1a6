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
    before = _counts(dst)
    report = MigrateReport(source=_counts(src))
    total = report.source["notes"]
    model = src.get_meta("embedding_model")
    if model is not None and dst.get_meta("embedding_model") is None:
        dst.set_meta("embedding_model", model)
    done = 0
    chunk: list[str] = []

    def flush(ids: list[str]) -> None:
        notes, vectors = src.get_notes(ids), src.get_vectors(ids)
        with dst.atomic():
            present = dst.get_notes(ids)
            for note_id in ids:
                if note_id in present:
                    report.skipped_notes += 1
                    have = {v.version for v in dst.versions(note_id)}
                else:
                    dst.insert_note(notes[note_id], vectors[note_id])
                    report.notes += 1
                    have = set()
                for version in src.versions(note_id):
                    if version.version not in have:
                        dst.add_version(version)
                        report.versions += 1

    for note in src.iter_notes(_EVERYTHING, batch=batch):
        chunk.append(note.id)
        if len(chunk) >= batch:
            flush(chunk)
            done += len(chunk)
            chunk = []
            if progress:
                progress(done, total)
    if chunk:
        flush(chunk)
        done += len(chunk)
    if progress:
        progress(done, total)
    # links once both ends exist; each link is copied with the batch that holds its source
    ids = [n.id for n in src.iter_notes(_EVERYTHING, batch=batch)]
    for start in range(0, len(ids), batch):
        owned = set(ids[start : start + batch])
        links = [lk for lk in src.links_for(list(owned)) if lk.source_id in owned]
        if links:
            dst.upsert_links(links)
            report.links += len(links)
    with dst.atomic():
        for call in src.llm_calls(limit=10**9):
            dst.record_llm_call(call)  # an upsert by id: a rerun rewrites the same record
            report.llm_calls += 1
    report.destination = _counts(dst)
    for key, count in report.source.items():
        if report.destination[key] < count or (before[key] == 0 and report.destination[key] != count):
            raise StoreError(
                f"verification failed: the source has {count} {key} but the destination "
                f"{report.destination[key]}; nothing in the source was changed, rerun to finish the copy"
            )
    return report


def migrate(src_url: str, dst_url: str, bar: BarFactory | None = None) -> MigrateReport:
    """Open both stores by URL (or SQLite path) and copy; ``bar(label, total)`` shows progress."""
    if src_url == dst_url:
        raise InvalidInput("source and destination are the same store")
    src = open_store(src_url)
    try:
        dst = open_store(dst_url)
        try:
            if bar is None:
                return copy_store(src, dst)
            with bar("migrating notes", src.count_notes(_EVERYTHING)) as progress:
                return copy_store(src, dst, progress)
        finally:
            dst.close()
    finally:
        src.close()
