"""The REST API's request and response bodies (the library's own types are returned as they are)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from ..notes import EnrichState, Note, NoteInput, SearchHit, to_utc
from ..store import Filters

MAX_BATCH = 100_000


class FilterSpec(BaseModel):
    """Read filters beyond scope (all optional)."""

    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    after: datetime | None = Field(None, description="only notes whose event time is at or after this")
    before: datetime | None = Field(None, description="only notes whose event time is before this")
    states: list[EnrichState] | None = None

    def filters(self) -> Filters:
        return Filters(
            metadata=self.metadata, event_after=self.after, event_before=self.before, states=self.states
        )


class AddMany(BaseModel):
    items: list[NoteInput] = Field(min_length=1, max_length=MAX_BATCH)
    batch_size: int | None = Field(None, ge=1, le=64, description="notes per LLM call")


class SearchRequest(BaseModel):
    query: str
    k: int = Field(5, ge=1, le=100)
    preset: Literal["hybrid", "paper", "keyword"] | None = None
    expand: bool = Field(True, description="add linked neighbours of the hits")
    token_budget: int | None = Field(1200, ge=1, le=100_000)
    filters: FilterSpec | None = None
    include_archived: bool = Field(False, description="also return archived and merged notes")


class SearchResult(BaseModel):
    hits: list[SearchHit]
    explanations: list[str]  # why each hit was returned, in words
    text: str = Field("", description="the hits as prompt lines for an agent (the server's present_view)")


class UpdateRequest(BaseModel):
    content: str | None = None
    keywords: list[str] | None = None
    tags: list[str] | None = None
    context: str | None = None
    metadata: dict[str, Any] | None = None
    event_time: datetime | None = None


class EnrichRequest(BaseModel):
    limit: int | None = Field(None, ge=1)
    include_failed: bool = False


class PinRequest(BaseModel):
    pinned: bool = Field(True, description="false unpins")


class RestoreRequest(BaseModel):
    version: int = Field(ge=1, description="the version to put back (see /history)")


class LinkRequest(BaseModel):
    source_id: str
    target_id: str
    reason: str = ""
    weight: float = Field(1.0, description="above 0; new links start at 1.0")


class ConsolidateRequest(BaseModel):
    dry_run: bool = Field(default=False, description="only report what would change")
    as_of: datetime | None = Field(
        default=None, description="judge decay and expiry as of this time (default now)"
    )
    use_llm: bool = Field(default=True, description="false: near duplicates are counted, not merged")
    full: bool = Field(default=False, description="re-check every near-duplicate pair, not only new ones")

    @field_validator("as_of")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else to_utc(v)  # out-of-range times are refused here, not in the job


class UndoRequest(BaseModel):
    run_id: str = Field(description="the run_id of a consolidation report")
    force: bool = Field(False, description="also restore notes changed after the run")


class NotePage(BaseModel):
    notes: list[Note]
    total: int
    limit: int
    offset: int
