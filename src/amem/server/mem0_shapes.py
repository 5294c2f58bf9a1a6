"""mem0's request bodies, filters and answers, as amem's scopes, Filters, NoteInputs and notes: the
translation half of the mem0 dialect (``mem0.py`` has the routes). Pure functions: nothing here reads
the store."""

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from pydantic import BaseModel, Field

from ..notes import Note, NoteInput, NoteStatus, NoteVersion, SearchHit, VersionCause
from ..store import Filters

ENTITIES = ("user_id", "agent_id", "run_id")
KEPT = ("role", "app_id")  # metadata amem itself wrote: a metadata update keeps it unless it names it
MAX_BATCH = 1000


class Refused(Exception):
    """A request amem answers with an error of its own choosing (status and message)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


# -- request bodies (mem0's field names; fields amem has no use for are accepted and ignored) ------------
class Message(BaseModel):
    role: str = "user"
    content: str | list[dict[str, Any]] | dict[str, Any] | None = None


class Entities(BaseModel):
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    app_id: str | None = None
    filters: dict[str, Any] | None = None


class AddBody(Entities):
    messages: list[Message] | str
    metadata: dict[str, Any] | None = None
    infer: bool | None = None  # mem0's fact extraction: never run, the messages are stored as they are
    async_mode: bool | None = None
    timestamp: int | float | str | None = None
    expiration_date: str | None = None


class SearchBody(Entities):
    query: str
    top_k: int | None = Field(None, ge=1, le=1000)
    threshold: float | None = None
    show_expired: bool | None = None


class ListBody(Entities):
    start_date: str | None = None
    end_date: str | None = None
    show_expired: bool | None = None


class UpdateBody(BaseModel):
    text: str | None = None
    metadata: dict[str, Any] | None = None
    timestamp: int | float | str | None = None
    expiration_date: str | None = None


class BatchItem(UpdateBody):
    memory_id: str


class BatchBody(BaseModel):
    memories: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)


# -- filters ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Criteria:
    """What a request selects: entity ids (the scope) and read filters."""

    ids: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    after: datetime | None = None
    before: datetime | None = None

    @property
    def named(self) -> bool:
        return bool(self.ids) or "app_id" in self.metadata

    def filters(self, statuses: list[NoteStatus] | None) -> Filters | None:
        if not self.metadata and self.after is None and self.before is None and statuses is None:
            return None
        return Filters(
            metadata=self.metadata, event_after=self.after, event_before=self.before, statuses=statuses
        )


def criteria(*sources: Any, start: str | None = None, end: str | None = None) -> Criteria:
    """mem0's filters (and top-level entity ids) as amem's scope and Filters. Supported: user_id, agent_id,
    run_id ('*' for any), app_id (a metadata key on amem's notes), metadata equality and created_at ranges,
    joined by AND; OR, NOT and other operators are refused, so nothing is silently widened."""
    flat: dict[str, Any] = {}
    for source in sources:
        if source is not None:
            _flatten(source, flat)
    ids: dict[str, str] = {}
    metadata: dict[str, Any] = {}
    after = before = None
    for key, value in flat.items():
        if key in ENTITIES or key == "app_id":
            if not isinstance(value, str) or not value:
                raise Refused(400, f"{key} must be a string ('*' for any): amem takes no operators on it")
            if value != "*":
                (metadata if key == "app_id" else ids)[key] = value
        elif key == "metadata":
            if not isinstance(value, dict) or any(isinstance(v, dict | list) for v in value.values()):
                raise Refused(400, 'metadata filters are equalities: {"metadata": {"k": "v"}}')
            metadata.update(value)
        elif key == "created_at":
            after, before = _range(value)
        else:
            raise Refused(
                400,
                f"amem does not support the filter {key!r}; it filters on user_id, agent_id, run_id, app_id, "
                "metadata and created_at, joined by AND",
            )
    if start is not None or end is not None:
        spec = {k: v for k, v in (("gte", start), ("lte", end)) if v is not None}
        after, before = _range(spec)
    return Criteria(ids, metadata, after, before)


def _flatten(raw: Any, into: dict[str, Any]) -> None:
    if not isinstance(raw, dict):
        raise Refused(400, 'filters must be a JSON object such as {"user_id": "alice"}')
    for key, value in raw.items():
        if value is None:
            continue
        if key == "AND":
            if not isinstance(value, list):
                raise Refused(400, "AND takes a list of filter objects")
            for part in value:
                _flatten(part, into)
        elif key in ("OR", "NOT"):
            raise Refused(400, f"amem does not support {key} in filters: give what every memory must match")
        elif key in into and into[key] != value:
            raise Refused(400, f"the request gives {key} twice, with different values")
        else:
            into[key] = value


def _range(spec: Any) -> tuple[datetime | None, datetime | None]:
    """A created_at range (amem's event time) as [after, before)."""
    if not isinstance(spec, dict) or not spec or set(spec) - {"gte", "gt", "lte", "lt"}:
        raise Refused(400, 'created_at takes gte, gt, lte or lt: {"created_at": {"gte": "2024-07-01"}}')
    after = before = None
    for op, raw in spec.items():
        moment, whole_day = parse_time(raw, "created_at")
        step = timedelta(days=1) if whole_day else timedelta(microseconds=1)
        if op in ("gte", "gt"):
            after = moment + step if op == "gt" else moment
        else:
            before = moment + step if op == "lte" else moment
    return after, before


def parse_time(raw: Any, what: str) -> tuple[datetime, bool]:
    """A time as mem0 sends one (Unix seconds, a date, an ISO time) in UTC; True for a whole day."""
    try:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return datetime.fromtimestamp(raw, timezone.utc), False
        if isinstance(raw, str) and raw.strip().lstrip("-").replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(raw), timezone.utc), False
        if isinstance(raw, str) and len(raw.strip()) == 10:
            return datetime.combine(date.fromisoformat(raw.strip()), time(), timezone.utc), True
        if isinstance(raw, str):
            moment = datetime.fromisoformat(raw.strip())
            return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)), False
    except (ValueError, OverflowError, OSError):
        pass
    raise Refused(400, f"{what}: {raw!r} is not a time; give Unix seconds, YYYY-MM-DD or an ISO 8601 time")


def query_criteria(params: Mapping[str, str]) -> Criteria:
    """Entity ids and ``filters`` given as query parameters (delete_all, the v1 list). mem0's client
    writes a ``filters`` dict there as Python's repr, so that is read too (as a literal, never run)."""
    given = {k: params[k] for k in (*ENTITIES, "app_id") if k in params}
    raw = params.get("filters")
    parsed: Any = None
    if raw:
        if len(raw) > 4096:
            raise Refused(400, "the filters parameter is longer than 4096 characters")
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):
            try:
                parsed = ast.literal_eval(raw)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                parsed = None
            if not isinstance(parsed, dict):
                raise Refused(400, "the filters parameter is not a JSON object") from None
    return criteria(given, parsed)


def entity_ids(body: Entities) -> dict[str, Any]:
    return {k: getattr(body, k) for k in (*ENTITIES, "app_id")}


# -- responses -------------------------------------------------------------------------------------------
def memory_json(note: Note) -> dict[str, Any]:
    """A note as mem0 shows a memory; amem's own attributes under ``amem``."""
    out: dict[str, Any] = {
        "id": note.id,
        "memory": note.content,
        "hash": note.content_hash,
        "metadata": note.metadata,
        "categories": note.tags,
        "created_at": note.event_time.isoformat(),
        "updated_at": note.updated_at.isoformat(),
        "expiration_date": note.expires_at.date().isoformat() if note.expires_at else None,
    }
    out.update({k: v for k in ENTITIES if (v := getattr(note, k)) is not None})
    out["amem"] = {
        "keywords": note.keywords,
        "context": note.context,
        "state": note.state.value,
        "status": note.status.value,
        "version": note.version,
    }
    return out


def hit_json(hit: SearchHit, hide_bm25: bool) -> dict[str, Any]:
    why = hit.why.model_copy(update={"keyword_score": None}) if hide_bm25 else hit.why
    out = memory_json(hit.note)
    out["score"] = hit.score
    out["amem"] |= {"why": why.describe(), "linked_from": why.via_link_from}
    return out


def history_json(note: Note, versions: list[NoteVersion]) -> list[dict[str, Any]]:
    """amem's versions as mem0's history: ADD for the first, UPDATE (with amem's cause) after."""
    out: list[dict[str, Any]] = []
    previous: str | None = None
    for v in versions:
        first = not out and v.cause in (VersionCause.create, VersionCause.imported)
        entry = {
            "id": f"{v.note_id}-{v.version}",
            "memory_id": v.note_id,
            "old_memory": previous,
            "new_memory": v.content,
            "event": "ADD" if first else "UPDATE",
            "metadata": v.metadata,
            "categories": v.tags,
            "created_at": v.created_at.isoformat(),
            "updated_at": v.created_at.isoformat(),
            "is_deleted": False,
            **{k: val for k in ENTITIES if (val := getattr(note, k)) is not None},
            "amem": {"version": v.version, "cause": v.cause.value, "detail": v.detail},
        }
        out.append(entry)
        previous = v.content
    return out


def _text(message: Message) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content if isinstance(content, list) else [content]:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise Refused(400, f"amem stores text, not a message part of type {part.get('type')!r}")
        texts.append(part["text"])
    return "\n".join(texts)


def expiry(day: str) -> datetime:
    """mem0's expiration date: the note is archived by the first consolidation after that day (UTC)."""
    moment, whole_day = parse_time(day, "expiration_date")
    return datetime.combine(moment.date(), time.max, timezone.utc) if whole_day else moment


def notes_of(body: AddBody, crit: Criteria) -> list[NoteInput]:
    """One note per message (system messages are instructions, not memories), its role in metadata."""
    if crit.after is not None or crit.before is not None or set(crit.metadata) - {"app_id"}:
        raise Refused(400, "add takes only entity ids (user_id, agent_id, run_id, app_id) in its filters")
    messages = [Message(content=body.messages)] if isinstance(body.messages, str) else body.messages
    when = parse_time(body.timestamp, "timestamp")[0] if body.timestamp is not None else None
    expires = expiry(body.expiration_date) if body.expiration_date else None
    items = []
    for message in messages:
        text = _text(message)
        if message.role == "system" or not text.strip():
            continue
        metadata = {**(body.metadata or {}), **crit.metadata, "role": message.role}
        items.append(NoteInput(content=text, event_time=when, metadata=metadata, expires_at=expires))
    return items
