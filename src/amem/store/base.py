"""The Store seam: everything amem persists, behind one small interface.

One contract test suite (tests/test_store_contract.py) runs against every implementation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field, ValidationError, field_validator

from ..embed.base import Vectors
from ..errors import InvalidInput
from ..notes import (
    EnrichState,
    Link,
    LLMCall,
    Note,
    NoteStatus,
    NoteVersion,
    Scope,
    is_metadata_key,
    text_problem,
    to_utc,
)


class Filters(BaseModel):
    """Read filters beyond scope. Metadata matches top-level keys by equality."""

    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    event_after: datetime | None = None
    event_before: datetime | None = None
    #: upkeep: notes first stored before this time / whose expiry is at or before this time
    ingested_before: datetime | None = None
    expires_by: datetime | None = None
    states: list[EnrichState] | None = None
    #: None: any status. Search asks for active notes only (archived and merged ones are out of search).
    statuses: list[NoteStatus] | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidInput(f"bad filter {'.'.join(map(str, first['loc']))}: {first['msg']}") from None

    @field_validator("metadata")
    @classmethod
    def _keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, value in v.items():
            if not is_metadata_key(key):
                raise InvalidInput(f"metadata filter key {key!r}: use 1-64 letters, digits, '_' or '-'")
            bad_int = isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63
            bad_float = isinstance(value, float) and not math.isfinite(value)
            if bad_int or bad_float or (isinstance(value, str) and text_problem(value) is not None):
                raise InvalidInput(
                    f"metadata filter {key!r}: the value {value!r} can never match; give plain JSON"
                )
        return v

    @field_validator("event_after", "event_before", "ingested_before", "expires_by")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else to_utc(v)

    def is_empty(self) -> bool:
        return self.only_statuses() and not self.statuses

    def only_statuses(self) -> bool:
        """Nothing but (perhaps) a status filter, which the stores' indexes answer without a scan."""
        return (
            not self.metadata
            and self.event_after is None
            and self.event_before is None
            and not self.states
            and self.ingested_before is None
            and self.expires_by is None
        )

    def with_statuses(self, statuses: list[NoteStatus] | None) -> Filters:
        return self.model_copy(update={"statuses": statuses})


def scope_clauses(scope: Scope, mark: str, no_user: str | None = None) -> tuple[list[str], list[Any]]:
    """SQL conditions on a notes table aliased ``n`` for a scope (``mark``: the driver's placeholder). A
    field left out matches anything, unless the scope is exact, where it matches only a missing field
    (a missing user is ``no_user`` where the store keeps one, NULL otherwise)."""
    clauses: list[str] = []
    params: list[Any] = []
    for col, value in (("user_id", scope.user_id), ("agent_id", scope.agent_id), ("run_id", scope.run_id)):
        if value is None and scope.exact and col == "user_id" and no_user is not None:
            value = no_user
        if value is not None:
            clauses.append(f"n.{col} = {mark}")
            params.append(value)
        elif scope.exact:
            clauses.append(f"n.{col} IS NULL")
    return clauses, params


class Store(Protocol):
    url: str

    def close(self) -> None: ...
    def bound(self, user_id: str) -> Store:
        """A handle on this store for one user's notes: what it reads and writes by note id is that
        user's only (on Citus, one shard). Shares connections and transactions with the store."""
        ...

    def atomic(self) -> AbstractContextManager[None]:
        """All writes inside commit together or not at all; nestable."""
        ...

    def bulk(self, expected: int) -> AbstractContextManager[None]:
        """About ``expected`` notes are about to be inserted: the store may defer index upkeep until the
        block ends (every note is searchable throughout, perhaps more slowly)."""
        ...

    # meta
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...

    # notes
    def insert_note(self, note: Note, vector: Vectors) -> None: ...
    def update_note(self, note: Note, vector: Vectors | None = None) -> None: ...
    def delete_note(self, note_id: str) -> None:
        """Removes the note, its vector, its keyword entry, every link touching it and its versions."""
        ...

    def get_note(self, note_id: str) -> Note | None: ...
    def get_notes(self, ids: Sequence[str]) -> dict[str, Note]: ...
    def get_vectors(self, ids: Sequence[str]) -> dict[str, Vectors]: ...
    def list_notes(
        self, scope: Scope, filters: Filters | None = None, limit: int = 100, offset: int = 0
    ) -> list[Note]:
        """Newest ingest first."""
        ...

    def count_notes(self, scope: Scope, filters: Filters | None = None) -> int: ...
    def iter_notes(self, scope: Scope, batch: int = 500, filters: Filters | None = None) -> Iterator[Note]:
        """Every note of the scope (and filters), oldest ingest first (export, re-embedding, upkeep)."""
        ...

    def find_by_hash(self, scope: Scope, content_hash: str) -> list[str]: ...
    def find_by_hashes(self, scope: Scope, hashes: Sequence[str]) -> dict[str, list[str]]:
        """``find_by_hash`` for many hashes in a few queries (hash -> ids; absent hashes left out)."""
        ...

    def tag_counts(self, scope: Scope, filters: Filters | None = None) -> tuple[int, dict[str, int]]:
        """How many notes match, and on how many of them each tag is (for the tag specificity rule)."""
        ...

    def lock_hashes(self, scope: Scope, hashes: Sequence[str]) -> None:
        """Inside ``atomic()``: until the transaction ends, no other transaction gets past this call for
        the same (exact scope, content hash), so a writer may check for a duplicate and then insert
        without a race. Locks are taken in sorted order (no deadlock between two writers); take them
        before reading any note the write will lock. SQLite's write transactions are serial already."""
        ...

    # links
    def upsert_links(self, links: Sequence[Link]) -> None: ...
    def delete_links(self, pairs: Sequence[tuple[str, str]]) -> None: ...
    def links_for(self, ids: Sequence[str]) -> list[Link]:
        """Links with either end in ``ids``."""
        ...

    # versions and LLM calls
    def add_version(self, version: NoteVersion) -> None: ...
    def versions(self, note_id: str) -> list[NoteVersion]: ...
    def record_llm_call(self, call: LLMCall) -> None: ...
    def llm_calls(self, note_id: str | None = None, limit: int = 1000) -> list[LLMCall]: ...
    def get_llm_calls(self, ids: Sequence[str]) -> dict[str, LLMCall]:
        """The calls with these ids (absent ids left out), whatever notes they belong to."""
        ...

    # search
    def nearest(
        self,
        vector: Vectors,
        k: int,
        scope: Scope,
        filters: Filters | None = None,
        exclude: Sequence[str] = (),
    ) -> list[tuple[str, float]]:
        """(id, cosine) best first."""
        ...

    def keyword(
        self, query: str, k: int, scope: Scope, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        """(id, bm25 score, higher is better) best first."""
        ...

    # LLM response cache
    def cache_get(self, key: str) -> str | None: ...
    def cache_put(self, key: str, value: str) -> None: ...

    # upkeep (consolidation and usage)
    def record_retrievals(self, counts: dict[str, int], at: datetime) -> None:
        """Add to the notes' retrieval counters and set their last retrieval time (no version)."""
        ...

    def iter_links(self, scope: Scope, batch: int = 2000) -> Iterator[Link]:
        """Every link whose source note is in the scope."""
        ...

    def duplicate_groups(self, scope: Scope) -> list[list[str]]:
        """Active notes sharing a content hash within one exact scope, each group oldest first."""
        ...

    def similar_pairs(
        self, scope: Scope, threshold: float, since: datetime | None = None, limit: int = 10_000
    ) -> list[tuple[str, str, float]]:
        """(older id, newer id, cosine) for active notes of one exact scope at or above ``threshold``,
        best first; with ``since``, only pairs where a note was updated at or after it."""
        ...

    def versions_in_batch(self, batch: str) -> list[NoteVersion]:
        """The versions a batch of changes (a consolidation run) wrote, in the order written."""
        ...

    def stats(self) -> dict[str, Any]: ...


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    """``items`` in lists of at most ``size``: SQL parameter lists stay under the engines' limits."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
