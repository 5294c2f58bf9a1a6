"""The methods `amem bench locomo` compares, and the stores they are ingested into.

Baselines (`bm25`, `dense`, `fusion`, `full_context`) share one store of raw turns (no LLM). Each amem
variant has its own store, named after the method, the LLM and the embedder, so a rerun resumes and
reuses its LLM cache. One scope per conversation: user id = the conversation's sample id.

`amem_episode` is ingested by the episode pipeline (one call per episode of turns), into its own store.

`amem_no_evolution` is not ingested again: it is the `amem` store with every evolved note put back to
its attributes from before its first evolution (history keeps them). The notes and links are then the
same, and the difference in retrieval is what evolution changed, at no LLM cost. The field ablations
(`amem_no_keywords`, `amem_no_tags`, `amem_no_context`, `amem_links_only`) are made the same way, with
those fields emptied and every note embedded and indexed again.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import Settings
from ..ingest import ingest_locomo
from ..memory import Memory
from ..notes import VersionCause
from ..transfer import export_file, import_file

BarFactory = Callable[[str, int], AbstractContextManager[Callable[[int, int], None]]]


@dataclass(frozen=True)
class Method:
    name: str
    store: str  # which ingestion this method reads: "raw", "amem", "amem_paper", "amem_no_evolution"
    preset: str  # retrieval preset: keyword, paper (dense), hybrid, or "all" (full context)
    expand: bool  # follow links


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("bm25", "raw", "keyword", False),
        Method("dense", "raw", "paper", False),
        Method("fusion", "raw", "hybrid", False),
        Method("full_context", "raw", "all", False),
        Method("amem_paper", "amem_paper", "paper", True),
        Method("amem", "amem", "hybrid", True),
        Method("amem_no_links", "amem", "hybrid", False),
        Method("amem_episode", "amem_episode", "hybrid", True),
        Method("amem_episode_no_links", "amem_episode", "hybrid", False),
        Method("amem_no_evolution", "amem_no_evolution", "hybrid", True),
        *(
            Method(name, name, "hybrid", True)
            for name in ("amem_no_keywords", "amem_no_tags", "amem_no_context")
        ),
        Method("amem_links_only", "amem_links_only", "hybrid", True),
    )
}
BASELINES = ("bm25", "dense", "fusion", "full_context")
#: suffix of a store (and its methods) consolidated by `amem consolidate` after ingestion
CONSOLIDATED = "+consolidated"
#: stores computed from another store rather than ingested
#: field ablations: the `amem` store with these LLM-written fields emptied (and the notes embedded and indexed
#: again), so each figure says what that field adds to retrieval, at no LLM cost
ABLATIONS: dict[str, tuple[str, ...]] = {
    "amem_no_keywords": ("keywords",),
    "amem_no_tags": ("tags",),
    "amem_no_context": ("context",),
    "amem_links_only": ("keywords", "tags", "context"),  # the turn's own words; links and nothing else
}
DERIVED = {"amem_no_evolution": "amem", **dict.fromkeys(ABLATIONS, "amem")}
#: prefix of a store built elsewhere (``--compare LABEL=PATH``): copied in, evaluated, never ingested into
COMPARED = "compare:"


def compared_methods(label: str) -> list[Method]:
    """The amem methods, read from a store another commit or setting built (``amem@before``)."""
    store = COMPARED + label
    return [
        Method(f"amem@{label}", store, "hybrid", True),
        Method(f"amem_no_links@{label}", store, "hybrid", False),
    ]


def copy_compared(out: Path, label: str, source: Path, settings: Settings) -> None:
    """A fresh copy of ``source`` for this run (its WAL folded in): the original is never written to."""
    import sqlite3

    if not source.is_file():
        raise FileNotFoundError(f"--compare {label}={source}: no such store file")
    target = store_path(out, COMPARED + label, settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as db:
        db.execute("VACUUM INTO ?", (str(target),))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def store_path(out: Path, store: str, settings: Settings) -> Path:
    base, suffix = store.removesuffix(CONSOLIDATED), "+c" if store.endswith(CONSOLIDATED) else ""
    if base.startswith(COMPARED):
        return out / "stores" / f"compare__{slug(base.removeprefix(COMPARED))}{suffix}.db"
    if base == "raw":
        return out / "stores" / f"raw__{slug(settings.embedder)}{suffix}.db"
    return out / "stores" / f"{base}__{slug(settings.llm)}__{slug(settings.embedder)}{suffix}.db"


def open_memory(out: Path, store: str, settings: Settings) -> Memory:
    """The memory a store name stands for, configured as that ingestion needs."""
    path = store_path(out, store, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = store.removesuffix(CONSOLIDATED)
    if store == "raw":  # raw turns are written without an LLM; their consolidated copy is judged by one
        return Memory(settings=replace(settings, database_url=f"sqlite:///{path}", llm="none"))
    pipeline = {"amem_paper": "paper", "amem_episode": "episode"}.get(base, "amem")
    return Memory(settings=replace(settings, database_url=f"sqlite:///{path}", pipeline=pipeline))


def derive_no_evolution(out: Path, settings: Settings) -> int:
    """Rebuild the no-evolution store when the `amem` store changed; returns the notes put back."""

    def put_back(target: Memory) -> int:
        reverted = 0
        for note in list(target.store.iter_notes(target.scope)):
            versions = target.history(note.id)
            evolved = [v.version for v in versions if v.cause == VersionCause.evolve]
            if not evolved:
                continue
            before = [v for v in versions if v.version < evolved[0]][-1]
            target.update(note.id, keywords=before.keywords, tags=before.tags, context=before.context)
            reverted += 1
        return reverted

    return _derive(out, settings, "amem_no_evolution", put_back)


def derive_ablation(out: Path, settings: Settings, store: str) -> int:
    """Rebuild a field-ablation store when the `amem` store changed; returns the notes emptied."""
    fields = ABLATIONS[store]

    def empty(target: Memory) -> int:
        changed = 0
        for note in list(target.store.iter_notes(target.scope)):
            if any(getattr(note, f) for f in fields):
                target.update(
                    note.id,
                    keywords=[] if "keywords" in fields else None,
                    tags=[] if "tags" in fields else None,
                    context="" if "context" in fields else None,
                )
                changed += 1
        return changed

    return _derive(out, settings, store, empty)


def _derive(out: Path, settings: Settings, store: str, change: Callable[[Memory], int]) -> int:
    """``store`` as a copy of the `amem` store changed by ``change``, rebuilt only when the source changed."""
    with open_memory(out, "amem", settings) as source:
        totals = source.store.stats()
        fingerprint = f"notes={totals['notes']} versions={totals['versions']}"
        path = store_path(out, store, settings)
        if path.exists():
            with open_memory(out, store, settings) as old:
                if old.store.get_meta("derived_from") == fingerprint:
                    return 0
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            dump = Path(tmp) / "amem.jsonl"
            with dump.open("w", encoding="utf-8") as fh:
                export_file(source, fh)
            with open_memory(out, store, settings) as target:
                import_file(target, dump)
                changed = change(target)
                target.store.set_meta("derived_from", fingerprint)
    return changed


def consolidated_copy(out: Path, store: str, settings: Settings) -> dict[str, object]:
    """A compacted copy of ``store`` consolidated now (near duplicates judged by the run's LLM, the raw
    store's too), and what that changed: active notes, links and compacted size before and after."""
    import sqlite3

    source, target = store_path(out, store, settings), store_path(out, store + CONSOLIDATED, settings)
    answers: list[tuple[str, str, str]] = []  # the previous copy's LLM cache: a rerun asks nothing again
    if target.exists():
        with sqlite3.connect(target) as db:
            answers = db.execute("SELECT key, value, created_at FROM llm_cache").fetchall()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(source) as db:
        db.execute("VACUUM INTO ?", (str(target),))
    with sqlite3.connect(target) as db:
        db.executemany("INSERT OR IGNORE INTO llm_cache VALUES (?, ?, ?)", answers)
    before = target.stat().st_size
    with open_memory(out, store + CONSOLIDATED, settings) as memory:
        report = memory.consolidate()
    with sqlite3.connect(target) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
    return {
        "run_id": report.run_id,
        "notes_before": report.notes_before,
        "notes_after": report.notes_after,
        "links_before": report.links_before,
        "links_after": report.links_after,
        "bytes_before": before,
        "bytes_after": target.stat().st_size,
        "changes": {kind: report.count(kind) for kind in ("merge", "prune", "archive")},
        "judged": report.judged,
        "updates_left": report.updates_left,
        "unconfirmed": report.unconfirmed,
        "seconds": round(report.seconds, 2),
    }


def ingest(
    out: Path,
    stores: Sequence[str],
    settings: Settings,
    data: Path,
    conversations: Sequence[str],
    max_turns: int | None,
    batch_size: int,
    bar: BarFactory | None = None,
    max_sessions: int | None = None,
) -> dict[str, int]:
    """Bring every store up to date (resumable: turns already stored are skipped)."""
    added: dict[str, int] = {}
    for store in dict.fromkeys(DERIVED.get(s, s) for s in stores):
        with open_memory(out, store, settings) as memory:
            report = ingest_locomo(memory, data, conversations, max_turns, batch_size, bar, max_sessions)
            added[store] = int(report["added"])
    if "amem_no_evolution" in stores:
        added["amem_no_evolution"] = derive_no_evolution(out, settings)
    for store in ABLATIONS:
        if store in stores:
            added[store] = derive_ablation(out, settings, store)
    return added
