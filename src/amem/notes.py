"""Pure data: notes, links, versions, LLM call records and search hits.

Times are always timezone-aware UTC; ids are stable random hex strings that never change meaning.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from enum import Enum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import InvalidInput

#: The largest count both stores keep (PostgreSQL's integer columns are signed 32-bit).
INT32 = 2**31 - 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC (documented), aware ones converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise InvalidInput(
            f"time {value.isoformat()} is out of range in UTC; give a time in years 1-9999"
        ) from None


def new_id() -> str:
    return uuid.uuid4().hex


def content_hash(content: str) -> str:
    """Hash of the normalised content (NFC, collapsed whitespace, case-folded)."""
    norm = " ".join(unicodedata.normalize("NFC", content).casefold().split())
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()


class EnrichState(str, Enum):
    """enriched: the LLM wrote its attributes; pending: waiting for the LLM; failed: gave up after retries."""

    enriched = "enriched"
    pending = "pending"
    failed = "failed"


class NoteStatus(str, Enum):
    """active: searchable; archived: out of search, kept and restorable; merged: folded into another note
    (``merged_into``), kept for its history."""

    active = "active"
    archived = "archived"
    merged = "merged"


class Scope(BaseModel):
    """Who a note belongs to. When reading, a None field matches anything unless ``exact`` is set,
    in which case None matches only notes without that field (used for writes: linking and evolution
    never cross a scope boundary)."""

    model_config = ConfigDict(frozen=True)

    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    exact: bool = False

    def matches(self, note: Note) -> bool:
        return all(
            (want is None and not self.exact) or want == have
            for want, have in (
                (self.user_id, note.user_id),
                (self.agent_id, note.agent_id),
                (self.run_id, note.run_id),
            )
        )


class Note(BaseModel):
    """An atomic memory (paper: m = {c, t, K, G, X, e, L}); the embedding lives in the store."""

    id: str = Field(default_factory=new_id)
    content: str
    event_time: datetime = Field(default_factory=utcnow)
    ingest_time: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    keywords: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    context: str = ""
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    embedding_model: str = ""
    content_hash: str = ""
    state: EnrichState = EnrichState.pending
    version: int = Field(default=1, ge=0, le=INT32)
    enrich_attempts: int = Field(default=0, ge=0, le=INT32)
    last_error: str | None = None
    status: NoteStatus = NoteStatus.active
    pinned: bool = False
    expires_at: datetime | None = None
    superseded_by: str | None = None
    merged_into: str | None = None
    #: Where else this note's fact came from: exact duplicates and merged notes (their metadata, event time
    #: and, for a merge, the absorbed note's id and content), so nothing a merge folds in is lost.
    sources: list[dict[str, Any]] = Field(default_factory=list)
    #: Usage counters (not versioned): how often search returned the note, and when last.
    retrievals: int = Field(default=0, ge=0, le=INT32)
    last_retrieved_at: datetime | None = None

    @field_validator("event_time", "ingest_time", "updated_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return to_utc(v)

    @field_validator("expires_at", "last_retrieved_at")
    @classmethod
    def _utc_opt(cls, v: datetime | None) -> datetime | None:
        return None if v is None else to_utc(v)

    def all_metadata(self) -> list[dict[str, Any]]:
        """The note's own metadata followed by that of every source folded into it."""
        return [self.metadata, *(s.get("metadata") or {} for s in self.sources)]

    @property
    def scope(self) -> Scope:
        """The note's own scope, exact: what its links and evolution may touch."""
        return Scope(user_id=self.user_id, agent_id=self.agent_id, run_id=self.run_id, exact=True)

    def embedding_text(self) -> str:
        """Paper Eq. 3: content, keywords, tags and context in one text, with the event date."""
        parts = [self.content]
        if self.keywords:
            parts.append("Keywords: " + ", ".join(self.keywords))
        if self.tags:
            parts.append("Tags: " + ", ".join(self.tags))
        if self.context:
            parts.append("Context: " + self.context)
        parts.append("Date: " + format_date(self.event_time))
        return "\n".join(parts)

    def keyword_text(self) -> str:
        """What the keyword index sees: the same fields, so the two indexes agree."""
        return self.embedding_text()


class Link(BaseModel):
    """A directed, explicit edge between two notes of the same scope."""

    source_id: str
    target_id: str
    weight: float = 1.0
    reason: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    llm_call_id: str | None = None

    @field_validator("created_at", "updated_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return to_utc(v)

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: float) -> float:
        return _link_weight(v)

    def effective_weight(self, now: datetime, half_life_days: float) -> float:
        """The weight decayed by disuse: it halves every ``half_life_days`` since the link was last
        created, confirmed or used (``updated_at``). Stored weights change only on use, so decay costs
        no writes."""
        if half_life_days <= 0:
            return self.weight
        idle = max(0.0, (now - self.updated_at).total_seconds()) / 86400.0
        return float(self.weight * 0.5 ** (idle / half_life_days))


class VersionCause(str, Enum):
    create = "create"
    enrich = "enrich"
    evolve = "evolve"
    update = "update"
    imported = "import"
    duplicate = "duplicate"  # an exact duplicate was written: its provenance joined this note
    merge = "merge"  # a near duplicate folded in, or folded into another, or a link re-pointed by a merge
    supersede = "supersede"  # a newer note replaced this fact
    archive = "archive"  # out of search (forgotten, expired or by hand)
    unarchive = "unarchive"
    pin = "pin"
    prune = "prune"  # a link that decayed under the floor was removed
    restore = "restore"  # put back as it was at an earlier version


class LinkSnapshot(BaseModel):
    """An outgoing link as it stood when a version was written (restoring the version restores it)."""

    target_id: str
    weight: float
    reason: str = ""
    created_at: datetime
    llm_call_id: str | None = None

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: float) -> float:
        return _link_weight(v)

    @field_validator("created_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return to_utc(v)


def _link_weight(value: float) -> float:
    """A stored link weight is a finite number, not negative (SQLite keeps NaN as NULL, jsonb refuses it)."""
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"a link weight must be a finite number of at least 0, not {value}")
    return value


class NoteVersion(BaseModel):
    """A full snapshot of a note after a change, and what caused that change."""

    note_id: str
    version: int = Field(ge=0, le=INT32)
    cause: VersionCause
    created_at: datetime = Field(default_factory=utcnow)
    llm_call_id: str | None = None
    detail: str = ""
    content: str
    keywords: list[str]
    tags: list[str]
    context: str
    metadata: dict[str, Any]
    event_time: datetime
    state: EnrichState
    status: NoteStatus = NoteStatus.active
    pinned: bool = False
    expires_at: datetime | None = None
    superseded_by: str | None = None
    merged_into: str | None = None
    sources: list[dict[str, Any]] = Field(default_factory=list)
    #: the note's outgoing links at this version; None for versions written before links were recorded
    links: list[LinkSnapshot] | None = None
    #: the consolidation run (or other batch of changes) that wrote this version, to undo it as a whole
    batch: str | None = None

    @field_validator("created_at", "event_time")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return to_utc(v)

    @field_validator("expires_at")
    @classmethod
    def _utc_opt(cls, v: datetime | None) -> datetime | None:
        return None if v is None else to_utc(v)

    #: the fields a version stores beyond its bookkeeping (note_id, version, cause, time, call, detail)
    SNAPSHOT_FIELDS: ClassVar[set[str]] = {
        "content", "keywords", "tags", "context", "metadata", "event_time", "state", "status", "pinned",
        "expires_at", "superseded_by", "merged_into", "sources", "links",
    }  # fmt: skip

    @classmethod
    def snapshot(
        cls,
        note: Note,
        cause: VersionCause,
        llm_call_id: str | None = None,
        detail: str = "",
        links: list[Link] | None = None,
        batch: str | None = None,
    ) -> NoteVersion:
        return cls(
            note_id=note.id,
            version=note.version,
            cause=cause,
            created_at=note.updated_at,
            llm_call_id=llm_call_id,
            detail=detail,
            content=note.content,
            keywords=list(note.keywords),
            tags=list(note.tags),
            context=note.context,
            metadata=dict(note.metadata),
            event_time=note.event_time,
            state=note.state,
            status=note.status,
            pinned=note.pinned,
            expires_at=note.expires_at,
            superseded_by=note.superseded_by,
            merged_into=note.merged_into,
            sources=[dict(s) for s in note.sources],
            links=None
            if links is None
            else [
                LinkSnapshot(
                    target_id=lk.target_id,
                    weight=lk.weight,
                    reason=lk.reason,
                    created_at=lk.created_at,
                    llm_call_id=lk.llm_call_id,
                )
                for lk in links
                if lk.source_id == note.id
            ],
            batch=batch,
        )


class Refusal(BaseModel):
    """Part of an LLM answer that was not stored, and why: a person can see what the checks refused."""

    field: str  # context, keywords, tags, update, link, supersede, merge
    note_id: str | None = None  # the note the field was written for
    text: str
    reason: str
    action: str  # dropped, cut, repaired, derived, refused

    @field_validator("text", "reason", mode="before")
    @classmethod
    def _storable(cls, v: Any) -> Any:
        # an LLM answer may hold what no store keeps as text (NUL, lone surrogates): show, never fail
        if not isinstance(v, str):
            return v
        v = v.replace("\x00", "\ufffd")
        return v.encode("utf-8", "replace").decode("utf-8")[:1000]


class LLMCall(BaseModel):
    """One LLM request as it happened: what it was for, what it cost, whether it worked."""

    id: str = Field(default_factory=new_id)
    step: str
    prompt_version: str
    model: str
    input_tokens: int = Field(default=0, ge=0, le=INT32)
    output_tokens: int = Field(default=0, ge=0, le=INT32)
    latency_ms: float = 0.0
    ok: bool = True
    cached: bool = False
    error: str | None = None
    attempts: int = Field(default=1, ge=0, le=INT32)
    note_ids: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    #: what the grounding checks kept out of the memory from this call's answer
    refused: list[Refusal] = Field(default_factory=list)

    @field_validator("created_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return to_utc(v)


class Why(BaseModel):
    """Why a search returned a note: its ranks in each index, or the link that brought it."""

    dense_rank: int | None = None
    dense_score: float | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None
    via_link_from: str | None = None
    link_reason: str | None = None
    link_weight: float | None = None

    def describe(self) -> str:
        parts = []
        if self.dense_rank is not None:
            parts.append(f"dense #{self.dense_rank} (cos {self.dense_score:.3f})")
        if self.keyword_rank is not None:
            score = f" (bm25 {self.keyword_score:.2f})" if self.keyword_score is not None else ""
            parts.append(f"keyword #{self.keyword_rank}{score}")
        if self.via_link_from is not None:
            reason = f": {self.link_reason}" if self.link_reason else ""
            parts.append(f"linked from {self.via_link_from[:8]}{reason}")
        return ", ".join(parts) or "matched"


class SearchHit(BaseModel):
    """A note with its cosine similarity to the query (higher is better) and the reason it was returned."""

    note: Note
    score: float
    why: Why


def format_date(value: datetime) -> str:
    """'8 May 2023 (Monday)': unambiguous for small LLMs and for keyword search alike."""
    return f"{value.day} {value.strftime('%B %Y')} ({value.strftime('%A')})"


_METADATA_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def is_metadata_key(key: object) -> bool:
    """Keys a filter can address safely: 1-64 letters, digits, '_' or '-'."""
    return isinstance(key, str) and 0 < len(key) <= 64 and set(key) <= _METADATA_KEY_CHARS


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text in every store, or None: a NUL character (PostgreSQL text
    refuses it) or a lone surrogate (not encodable as UTF-8, e.g. bytes decoded with surrogateescape)."""
    if "\x00" in value:
        return "contains a NUL character; remove it"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"is not valid Unicode (a lone surrogate at character {exc.start}, as from undecodable bytes); "
            "decode the input as UTF-8 first"
        )
    return None


def check_text(value: str, what: str) -> None:
    """Raise InvalidInput naming ``what`` when ``value`` cannot be stored as text (see ``text_problem``)."""
    problem = text_problem(value)
    if problem is not None:
        raise InvalidInput(f"{what} {problem}")


def checked_scope(user_id: str | None, agent_id: str | None, run_id: str | None) -> Scope:
    """A memory's scope, checked: each field must be text every store can hold (it is compared in SQL)."""
    for name, value in (("user_id", user_id), ("agent_id", agent_id), ("run_id", run_id)):
        if value is not None:
            if not isinstance(value, str):
                raise InvalidInput(f"{name} must be a string, not {type(value).__name__}")
            check_text(value, name)
    if user_id == "":
        # PostgreSQL keys the notes of no user under '' (the distribution key is never NULL)
        raise InvalidInput("user_id must not be empty: leave it out for a memory without a user")
    return Scope(user_id=user_id, agent_id=agent_id, run_id=run_id)


def checked_texts(values: Sequence[str] | str, what: str) -> list[str]:
    """Hand-given attributes: a list of strings (one string is not a list of letters), each storable."""
    if isinstance(values, str) and what in ("keywords", "tags"):
        raise InvalidInput(f"{what} must be a list of strings, not one string")
    out = []
    for value in values:
        if not isinstance(value, str):
            raise InvalidInput(f"{what} must be text, not {type(value).__name__}")
        check_text(value, what)
        out.append(value)
    return out


def check_json_text(value: Any, where: str) -> None:
    """``check_text`` for every string (and key) of a JSON value: an import or a batch read from a file."""
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                check_text(key, f"{where} key {key!r}")
            check_json_text(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_json_text(item, f"{where}[{i}]")


def check_metadata(metadata: dict[str, Any]) -> None:
    """Metadata must be plain JSON (no NaN/Infinity) with keys that filters can address, and text that
    every store keeps as given (no NUL, no lone surrogate)."""
    if not isinstance(metadata, dict):
        raise InvalidInput(f"metadata must be a JSON object, not {type(metadata).__name__}")
    for key in metadata:
        if not is_metadata_key(key):
            raise InvalidInput(f"metadata key {key!r}: use 1-64 letters, digits, '_' or '-'")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"metadata must be plain JSON (no NaN, Infinity or objects): {exc}") from None
    check_json_text(metadata, "metadata")


class NoteInput(BaseModel):
    """One thing to remember, as given to ``add_many``."""

    content: str
    event_time: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    pinned: bool = False
    #: after this time the note is archived by the next consolidation (kept, out of search)
    expires_at: datetime | None = None


class EnrichReport(BaseModel):
    """What an ``enrich`` run did. Notes it did not reach count as still pending (or failed)."""

    enriched: int = 0
    still_pending: int = 0
    failed: int = 0
    #: why the run ended before trying every note (the LLM provider was unreachable); None when it did not
    stopped: str | None = None
