"""``Memory``: the one entry point. Owns the order of the pipeline and its transactions; no SQL, no HTTP."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from . import background, inputs, pipeline, upkeep
from . import consolidate as consolidation
from .config import Settings
from .embed.base import Embedder, Vectors
from .errors import ConfigError, InvalidInput, NotFound, StoreError
from .llm.base import LLM
from .llm.runner import LLMRunner
from .notes import (
    EnrichReport,
    EnrichState,
    Link,
    LLMCall,
    Note,
    NoteInput,
    NoteStatus,
    NoteVersion,
    SearchHit,
    VersionCause,
    checked_scope,
    checked_texts,
    text_problem,
    to_utc,
    utcnow,
)
from .steps import graph, guard, lifecycle, write
from .steps.retrieve import SearchOptions, search_options
from .steps.retrieve import search as run_search
from .store import Filters, Store, open_store

if TYPE_CHECKING:
    from .audit import AuditReport

log = logging.getLogger("amem")

#: Largest note content accepted, in characters. Longer text should be split into several notes.
MAX_ENRICH_ATTEMPTS = pipeline.MAX_ENRICH_ATTEMPTS  # re-exported: callers import it from here

Progress = pipeline.Progress  # one type for the progress callbacks of add_many and enrich


class Memory:
    """An A-MEM memory bound to a store, an LLM, an embedder and a default scope.

    ``Memory()`` with no arguments uses the resolved configuration: SQLite under AMEM_HOME and the
    embedded local models. Pass objects (or ``provider:model`` strings) to plug in your own.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        llm: LLM | str | None = None,
        embedder: Embedder | str | None = None,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        settings: Settings | None = None,
        pipeline: str | None = None,
        retrieval: str | None = None,
        link_k: int = 5,
        link_floor: float = 0.2,
        evolve_floor: float = 0.5,
        batch_size: int = 4,
    ) -> None:
        overrides: dict[str, Any] = {"pipeline": pipeline, "retrieval": retrieval}
        for key, value in (("database_url", store), ("llm", llm), ("embedder", embedder)):
            if isinstance(value, str):
                overrides[key] = value
        if settings is None:
            settings = Settings.resolve(overrides)
        else:  # explicit arguments still win over a given Settings object
            settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        self.settings = settings
        self._whole_store: Store = (
            store
            if store is not None and not isinstance(store, str)
            else open_store(settings.store_url, settings.pool_size, settings.index_memory)
        )
        self.store = _bind(self._whole_store, user_id)
        self._llm: LLM | None = llm if llm is not None and not isinstance(llm, str) else None
        self._embedder: Embedder | None = (
            embedder if embedder is not None and not isinstance(embedder, str) else None
        )
        self.scope = checked_scope(user_id, agent_id, run_id)
        self.link_k, self.link_floor, self.evolve_floor = link_k, link_floor, evolve_floor
        self.batch_size = batch_size
        self._runner: LLMRunner | None = None
        active = Filters(statuses=[NoteStatus.active], states=[EnrichState.enriched])
        self.tag_stats = guard.TagStats(lambda scope: self.store.tag_counts(scope, active))
        self._usage = upkeep.Usage()  # shared with scoped views (they copy this object's fields)
        self._background = background.Holder()  # likewise

    # -- components, created on first use ------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from .providers import make_embedder

            self._embedder = make_embedder(self.settings.embedder, self.settings)
        return self._embedder

    @property
    def llm_enabled(self) -> bool:
        return self._llm is not None or self.settings.llm != "none"

    @property
    def llm(self) -> LLM:
        if self._llm is None:
            if self.settings.llm == "none":
                raise ConfigError("no LLM configured (llm = 'none'); set --llm or AMEM_LLM")
            from .providers import make_llm

            self._llm = make_llm(self.settings.llm, self.settings)
        return self._llm

    @property
    def runner(self) -> LLMRunner:
        if self._runner is None:
            cache = self.settings.llm_cache
            self._runner = LLMRunner(
                self.llm,
                record=self.store.record_llm_call,
                cache_get=self.store.cache_get if cache else None,
                cache_put=self.store.cache_put if cache else None,
            )
        return self._runner

    @property
    def checks(self) -> write.Checks:
        """What the grounding checks of a write need: tag counts of the scope and a note's history."""
        return write.Checks(tags=self.tag_stats, history=self.store.versions)

    def scoped(
        self, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> Memory:
        """The same memory (store, models) seen through another scope."""
        other = object.__new__(Memory)
        other.__dict__.update(self.__dict__)
        other.scope = checked_scope(user_id, agent_id, run_id)
        other.store = _bind(self._whole_store, user_id)
        return other

    @property
    def background(self) -> background.Enricher:
        """The worker that enriches notes added with ``wait=False``: ``status()``, ``wait(timeout)``."""
        return self._background.get(self)

    def close(self) -> None:
        """Stops background enrichment after the note in hand (the rest stays pending), then the store."""
        try:
            self._background.close()
            self.flush_usage()
        finally:
            self._whole_store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------
    def _new_note(self, item: NoteInput) -> Note:
        return inputs.new_note(item, self.scope, self.embedder.model_id)

    def _check_embedder(self) -> None:
        stored = self.store.get_meta("embedding_model")
        if stored is None:
            self.store.set_meta("embedding_model", self.embedder.model_id)
        elif stored != self.embedder.model_id:
            raise StoreError(
                f"this memory was embedded with {stored!r} but the embedder is {self.embedder.model_id!r}; "
                f"use --embedder {stored} (or AMEM_EMBEDDER)"
            )

    def add(
        self,
        content: str,
        *,
        event_time: datetime | str | None = None,
        metadata: dict[str, Any] | None = None,
        pinned: bool = False,
        expires_at: datetime | str | None = None,
        wait: bool | None = None,
    ) -> Note:
        """Store one note and enrich it (attributes, links, evolution). On LLM failure the note is kept
        as ``pending`` with a content embedding, searchable at once; ``enrich()`` finishes it later.
        ``wait=False`` (default: not ``enrich_in_background``) returns once the note is stored, pending,
        and leaves enrichment to the background worker (``background``).
        An exact duplicate in this scope returns the existing note instead (its provenance recorded)."""
        given = {"content": content, "event_time": event_time, "metadata": metadata or {}}
        note = self._new_note(self._coerce({**given, "pinned": pinned, "expires_at": expires_at}))
        if (folded := self._folded(note)) is not None:
            return folded
        return self._store_new(note, self.embedder.embed_documents([note.embedding_text()])[0], wait)

    def _folded(self, note: Note) -> Note | None:
        """The stored note an exact duplicate folds into (nothing embedded), else None once the store is
        known to take this embedder's vectors."""
        existing = upkeep.find_duplicate(self, note) if self.settings.dedupe else None
        if existing is not None and (folded := pipeline.fold(self, note, existing)) is not None:
            return folded
        self._check_embedder()
        return None

    def _store_new(self, note: Note, base: Vectors, wait: bool | None) -> Note:
        """``add`` after its checks, with the note's vector: store, then enrich now or in the background."""
        if not self.llm_enabled:
            return pipeline.store_pending(self, note, base, None)
        if self._deferred(wait):
            stored = pipeline.store_pending(self, note, base, None)
            self.background.submit(self.scope)
            return stored
        if self.settings.pipeline == "episode":  # an episode of one turn (add_many makes longer ones)
            stored = pipeline.store_pending(self, note, base, None)
            if stored.id != note.id:
                return stored  # folded into a copy stored meanwhile
            return pipeline.enrich_episodes(self, [stored], base[None, :])[0][0]
        return pipeline.enrich_one(self, note, base, is_new=True)

    def _deferred(self, wait: bool | None) -> bool:
        return not wait if wait is not None else self.settings.enrich_in_background

    def add_many(
        self,
        items: Iterable[NoteInput | str | dict[str, Any]],
        *,
        batch_size: int | None = None,
        progress: Progress | None = None,
        bulk: bool = True,
        wait: bool | None = None,
    ) -> list[Note]:
        """Add notes in order, ``batch_size`` notes per LLM call (1 = one call per note). Without an LLM,
        a large load may let the store defer its index upkeep (``bulk=False`` keeps it up row by row).
        ``wait=False``: stored pending at once, enriched by the background worker (as ``add``)."""
        notes = [note for _, note in self._validated(items)]  # validate all before storing any
        self._check_embedder()
        size = max(1, batch_size or self.batch_size)
        results: list[Note | None] = [None] * len(notes)
        fresh: list[int] = []
        first_of: dict[str, int] = {}
        later: list[tuple[int, int]] = []  # (duplicate, first of its content in this call)
        known = upkeep.find_duplicates(self, notes) if self.settings.dedupe else {}
        for i, note in enumerate(notes):
            existing = known.get(note.content_hash)
            if existing is not None and (folded := pipeline.fold(self, note, existing)) is not None:
                results[i] = known[note.content_hash] = folded  # a second copy folds into the updated note
            elif not self.settings.dedupe:
                fresh.append(i)
            elif note.content_hash in first_of:
                later.append((i, first_of[note.content_hash]))
            else:
                first_of[note.content_hash] = i
                fresh.append(i)
        out: list[Note] = []
        # without an LLM nothing is linked, so a large load may defer the store's index upkeep
        defer = self.llm_enabled and self._deferred(wait)
        with self.store.bulk(len(fresh)) if bulk and not self.llm_enabled else nullcontext():
            self._add_groups([notes[i] for i in fresh], size, out, progress, defer)
        if defer and fresh:
            self.background.submit(self.scope)
        for i, stored in zip(fresh, out, strict=True):
            results[i] = stored
        for i, j in later:
            first = results[j] or notes[j]  # stored as itself, or folded into a copy stored meanwhile
            results[i] = pipeline.fold(self, notes[i], self.store.get_note(first.id) or first) or first
        return [r for r in results if r is not None]

    def _add_groups(
        self, notes: list[Note], size: int, out: list[Note], progress: Progress | None, defer: bool = False
    ) -> None:
        if self.settings.pipeline == "episode" and self.llm_enabled and not defer:
            out.extend(self._add_episodes(notes, progress))
            return
        for start in range(0, len(notes), size):
            group = notes[start : start + size]
            bases = self.embedder.embed_documents([n.embedding_text() for n in group])
            if defer or not self.llm_enabled:  # stored pending: the whole group is one transaction
                out.extend(pipeline.store_new_pending(self, group, bases, None))
            elif size == 1 or len(group) == 1 or self.settings.pipeline == "paper":
                out.extend(
                    pipeline.enrich_one(self, n, b, is_new=True) for n, b in zip(group, bases, strict=True)
                )
            else:
                out.extend(pipeline.enrich_batch(self, group, bases))
            if progress:
                progress(len(out), len(notes))

    def _add_episodes(self, notes: list[Note], progress: Progress | None) -> list[Note]:
        """Every note stored first (searchable at once), then enriched one call per episode."""
        stored: list[Note] = []
        chunks: list[Vectors] = []
        for start in range(0, len(notes), 64):
            group = notes[start : start + 64]
            chunks.append(self.embedder.embed_documents([n.embedding_text() for n in group]))
            stored.extend(pipeline.store_new_pending(self, group, chunks[-1], None))
        bases = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
        todo = [i for i, (n, s) in enumerate(zip(notes, stored, strict=True)) if s.id == n.id]  # not folded
        done, _ = pipeline.enrich_episodes(self, [stored[i] for i in todo], bases[todo], progress)
        for i, note in zip(todo, done, strict=True):
            stored[i] = note
        return stored

    def check(self, items: Iterable[NoteInput | str | dict[str, Any]]) -> list[NoteInput]:
        """The items as inputs, each checked as ``add`` would check it; raises InvalidInput naming the first
        bad one. Lets a caller refuse a whole batch before it queues any of it."""
        return [item for item, _ in self._validated(items)]

    def _validated(self, items: Iterable[NoteInput | str | dict[str, Any]]) -> list[tuple[NoteInput, Note]]:
        return inputs.validated(items, self.scope, self.embedder.model_id)

    _coerce = staticmethod(inputs.coerce)

    def enrich(
        self, limit: int | None = None, include_failed: bool = False, progress: Progress | None = None
    ) -> EnrichReport:
        """Finish notes stored as pending (the LLM was down or answered garbage), oldest first. The run
        stops at the first call that cannot reach the provider (``EnrichReport.stopped`` says so)."""
        return pipeline.enrich_pending(self, limit, include_failed, progress)

    # -- reading ---------------------------------------------------------------------------------
    def get(self, note_id: str) -> Note:
        valid = isinstance(note_id, str) and text_problem(note_id) is None
        note = self.store.get_note(note_id) if valid else None
        if note is None or not self.scope.matches(note):
            raise NotFound(f"no note {note_id!r} in this scope; `amem list` shows the ids")
        return note

    def count(self, filters: Filters | None = None) -> int:
        return self.store.count_notes(self.scope, filters)

    def links(self, note_id: str) -> list[Link]:
        """The note's links whose other end is in this scope too."""
        self.get(note_id)
        return [lk for lk, _ in graph.linked(self.store, self.scope, note_id)]

    def link(self, source_id: str, target_id: str, reason: str = "", weight: float = 1.0) -> Link:
        """Link two notes of the same scope by hand (a version of the source records it)."""
        source, target = self.get(source_id), self.get(target_id)
        if source.scope != target.scope or source.id == target.id:
            raise InvalidInput("links join two different notes of the same scope")
        if not 0 < weight <= lifecycle.MAX_LINK_WEIGHT:
            raise InvalidInput(f"weight must be above 0 and at most {lifecycle.MAX_LINK_WEIGHT}")
        reason = checked_texts([reason], "reason")[0]
        link = Link(source_id=source_id, target_id=target_id, reason=reason.strip(), weight=weight)
        upkeep.add_links(self, [link], VersionCause.update, "linked by hand")
        return link

    def neighbours(self, note_id: str) -> list[graph.Neighbour]:
        """The notes linked to this one (either direction), strongest link first."""
        self.get(note_id)
        return graph.neighbours(self.store, self.scope, note_id)

    def history(self, note_id: str) -> list[NoteVersion]:
        self.get(note_id)
        return self.store.versions(note_id)

    def llm_calls(self, note_id: str | None = None) -> list[LLMCall]:
        if note_id is not None:
            self.get(note_id)
        return self.store.llm_calls(note_id)

    def search(
        self,
        query: str,
        k: int = 5,
        *,
        filters: Filters | None = None,
        preset: str | None = None,
        expand: bool = True,
        token_budget: int | None = 1200,
        include_archived: bool = False,
        track: bool = True,
    ) -> list[SearchHit]:
        """Top-k notes (hybrid dense + keyword by default) plus linked neighbours within the budget.
        Archived and merged notes are left out unless ``include_archived``; a superseded note comes
        after the note that replaced it. ``track`` feeds the hits back (retrieval counts, and links
        whose both ends came back grow stronger); benchmarks turn it off."""
        opts = search_options(self.settings, query, k, preset, expand, token_budget, include_archived)
        return self._search_embedded(query, None, opts, filters, track)

    def _search_embedded(
        self,
        query: str,
        qvec: Vectors | None,
        opts: SearchOptions,
        filters: Filters | None,
        track: bool,
    ) -> list[SearchHit]:
        """``search`` after its checks; ``qvec`` is the query's vector when the caller has it already."""
        seen: list[Link] = []
        hits = run_search(self.store, self.embedder, query, self.scope, filters, opts, seen, qvec)
        if track and hits and self._usage.record(hits, seen):
            self.flush_usage()
        return hits

    def flush_usage(self) -> None:
        """Write the buffered search feedback now (also done every 64 searches, 30 s, and on close)."""
        self._usage.flush(self)

    # -- editing ---------------------------------------------------------------------------------
    def update(
        self,
        note_id: str,
        *,
        content: str | None = None,
        keywords: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        context: str | None = None,
        metadata: dict[str, Any] | None = None,
        event_time: datetime | None = None,
    ) -> Note:
        """Edit a note by hand; the old version stays in ``history``. New content without new
        attributes marks the note pending, so ``enrich`` rewrites its keywords, tags and context."""
        note = self.get(note_id)
        given = {"content": content, "keywords": keywords, "tags": tags, "context": context}
        changes = inputs.edits(note, given | {"metadata": metadata, "event_time": event_time})
        new = note.model_copy(update={**changes, "version": note.version + 1, "updated_at": utcnow()})
        new = Note.model_validate(new.model_dump())
        vector = self.embedder.embed_documents([new.embedding_text()])[0]
        with self.store.atomic():
            current = self.store.get_note(note_id)
            if current is None or current.version != note.version:
                raise StoreError(
                    f"note {note_id} changed while it was being updated; read it again and retry"
                )
            self.store.update_note(new, vector)
            upkeep.write_version(self.store, new, VersionCause.update, None, "edited through the API")
        return new

    # -- upkeep ----------------------------------------------------------------------------------
    def pin(self, note_id: str, pinned: bool = True) -> Note:
        """A pinned note is never archived by consolidation (neither by importance nor by expiry)."""
        note = self.get(note_id)
        if note.pinned == pinned:
            return note
        return upkeep.change(self, note, VersionCause.pin, "pinned" if pinned else "unpinned", pinned=pinned)

    def archive(self, note_id: str) -> Note:
        """Take a note out of search; it stays readable and ``unarchive`` brings it back."""
        note = self.get(note_id)
        if note.pinned:
            raise InvalidInput(f"note {note_id} is pinned; unpin it first (`amem pin --off {note_id}`)")
        if note.status != NoteStatus.active:
            raise InvalidInput(f"note {note_id} is {note.status.value}, not active")
        return upkeep.change(self, note, VersionCause.archive, "archived by hand", status=NoteStatus.archived)

    def unarchive(self, note_id: str) -> Note:
        note = self.get(note_id)
        if note.status == NoteStatus.merged:
            raise InvalidInput(
                f"note {note_id} was merged into {note.merged_into}; `amem history {note_id}` shows the "
                "version to restore, or undo the consolidation run that merged it"
            )
        if note.status == NoteStatus.active:
            return note
        return upkeep.change(
            self, note, VersionCause.unarchive, "unarchived by hand", status=NoteStatus.active
        )

    def restore(self, note_id: str, version: int) -> Note:
        """Put a note back as it was at an earlier version (text, attributes, status, links)."""
        self.get(note_id)
        return upkeep.restore(self, note_id, version)

    def consolidate(
        self,
        *,
        dry_run: bool = False,
        as_of: datetime | None = None,
        use_llm: bool = True,
        full: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> consolidation.ConsolidationReport:
        """Merge duplicates, mark superseded facts, prune decayed links and archive forgotten notes in
        this scope; ``dry_run`` only reports. Every change is a version tagged with the run id."""
        return consolidation.consolidate(
            self,
            dry_run=dry_run,
            as_of=to_utc(as_of) if as_of else None,
            use_llm=use_llm,
            full=full,
            progress=progress,
        )

    def undo_consolidation(self, run_id: str, force: bool = False) -> consolidation.UndoReport:
        """Restore every note the run changed to its version from before the run."""
        return consolidation.undo(self, run_id, force)

    def delete(self, note_id: str) -> None:
        """Remove the note, its links and its versions for good."""
        self.get(note_id)
        self.store.delete_note(note_id)

    def delete_all(self, filters: Filters | None = None) -> int:
        """Remove every note of this scope that ``filters`` match (all of them without filters), as
        ``delete`` does; the number removed. What it removes is read first, so paging cannot skip any."""
        notes = self.list_all(filters)
        for note in notes:
            self.store.delete_note(note.id)  # one deleted meanwhile is simply gone already
        return len(notes)

    def list_all(self, filters: Filters | None = None, page: int = 500) -> list[Note]:
        """Every note of this scope that ``filters`` match, newest first (read ``page`` at a time)."""
        out: list[Note] = []
        while batch := self.store.list_notes(self.scope, filters, limit=page, offset=len(out)):
            out += batch
            if len(batch) < page:
                break
        return out

    def audit(self, examples: int = 5) -> AuditReport:
        """How faithful the LLM-written fields of this scope are (``amem audit``); reads, never writes."""
        from .audit import audit

        return audit(self.store, self.scope, examples)

    def stats(self) -> dict[str, Any]:
        """The whole store's totals, and under ``in_scope`` the notes and states this memory can see."""
        states = {
            s.value: n for s in EnrichState if (n := self.store.count_notes(self.scope, Filters(states=[s])))
        }
        statuses = {
            s.value: n for s in NoteStatus if (n := self.store.count_notes(self.scope, Filters(statuses=[s])))
        }
        scope = self.scope.model_dump(exclude={"exact"}, exclude_none=True)
        return {
            **self.store.stats(),
            "in_scope": {
                "scope": scope,
                "notes": sum(states.values()),
                "states": states,
                "statuses": statuses,
            },
        }

    def list(self, limit: int = 50, offset: int = 0, filters: Filters | None = None) -> list[Note]:
        return self.store.list_notes(self.scope, filters, limit=limit, offset=offset)

    def graph(self, limit: int = 2000, filters: Filters | None = None) -> graph.Graph:
        """The newest ``limit`` notes of this scope and the links between them, for drawing."""
        if limit < 1 or limit > 20_000:
            raise InvalidInput("limit must be between 1 and 20000")
        if filters is None or filters.statuses is None:  # the memory as search sees it
            filters = (filters or Filters()).with_statuses([NoteStatus.active])
        return graph.build(self.store, self.scope, filters, limit)


def _bind(store: Store, user_id: str | None) -> Store:
    """The store as one user's handle (each statement by id stays in that user's data: one shard on
    Citus), or the whole store for a memory that spans users. A Store without ``bound`` is used whole."""
    bound = getattr(store, "bound", None)
    return bound(user_id) if user_id is not None and bound is not None else store
