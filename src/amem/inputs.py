"""What a caller gives ``add`` / ``add_many``, checked and made into a note before anything is stored."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .errors import InvalidInput
from .notes import (
    EnrichState,
    Note,
    NoteInput,
    Scope,
    check_metadata,
    check_text,
    checked_texts,
    content_hash,
    to_utc,
    utcnow,
)

#: A note is one fact or event; past this a caller is storing a document and should split it.
MAX_CONTENT_CHARS = 20_000


def coerce(item: NoteInput | str | dict[str, Any]) -> NoteInput:
    if isinstance(item, NoteInput):
        return item
    if isinstance(item, str):
        return NoteInput(content=item)
    if isinstance(item, dict):
        try:
            return NoteInput.model_validate(item)
        except ValueError as exc:
            raise InvalidInput(f"bad note input: {exc}") from None
    raise InvalidInput(f"cannot add a {type(item).__name__}; give a string, a dict or a NoteInput")


def new_note(item: NoteInput, scope: Scope, embedding_model: str) -> Note:
    content = item.content
    if not isinstance(content, str) or not content.strip():
        raise InvalidInput("content is empty; give the text to remember")
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidInput(
            f"content is {len(content)} characters; the limit is {MAX_CONTENT_CHARS}. Split it into notes"
        )
    check_text(content, "content")
    check_metadata(item.metadata)
    now = utcnow()
    return Note(
        content=content.strip(),
        event_time=to_utc(item.event_time) if item.event_time else now,
        ingest_time=now,
        updated_at=now,
        user_id=scope.user_id,
        agent_id=scope.agent_id,
        run_id=scope.run_id,
        metadata=dict(item.metadata),
        embedding_model=embedding_model,
        content_hash=content_hash(content),
        pinned=item.pinned,
        expires_at=to_utc(item.expires_at) if item.expires_at else None,
    )


def validated(
    items: Iterable[NoteInput | str | dict[str, Any]], scope: Scope, embedding_model: str
) -> list[tuple[NoteInput, Note]]:
    """Every item checked before any is stored; the first bad one named by its position."""
    out = []
    for n, item in enumerate(items, start=1):
        try:
            given = coerce(item)
            out.append((given, new_note(given, scope, embedding_model)))
        except InvalidInput as exc:
            raise InvalidInput(f"item {n}: {exc}") from None
    return out


def said(speaker: str | None, text: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """A conversation turn as an ``add`` item: "speaker: words", as amem stores turns (the speaker helps
    enrichment). Past MAX_CONTENT_CHARS (a pasted document) the start is kept and ``metadata`` says
    ``truncated``: an agent framework's run should not fail on one long message."""
    content = f"{speaker}: {text}" if speaker else text
    if len(content) > MAX_CONTENT_CHARS:
        content, metadata = content[:MAX_CONTENT_CHARS], {**metadata, "truncated": True}
    return {"content": content, "metadata": metadata}


def edits(note: Note, given: dict[str, Any]) -> dict[str, Any]:
    """A hand edit's fields (``update``'s arguments; None: unchanged), checked, as changes to ``note``.
    New content without new attributes marks the note pending, so enrichment rewrites them."""
    changes: dict[str, Any] = {}
    if given.get("content") is not None:
        checked = new_note(coerce({"content": given["content"]}), note.scope, note.embedding_model)
        changes |= {"content": checked.content, "content_hash": checked.content_hash}
        if all(given.get(k) is None for k in ("keywords", "tags", "context")):
            changes["state"] = EnrichState.pending
    if (keywords := given.get("keywords")) is not None:
        changes["keywords"] = [k.strip() for k in checked_texts(keywords, "keywords") if k.strip()]
    if (tags := given.get("tags")) is not None:
        changes["tags"] = [t.strip().lower() for t in checked_texts(tags, "tags") if t.strip()]
    if (context := given.get("context")) is not None:
        changes["context"] = checked_texts([context], "context")[0].strip()
    if (metadata := given.get("metadata")) is not None:
        check_metadata(metadata)
        changes["metadata"] = dict(metadata)
    if (event_time := given.get("event_time")) is not None:
        if not isinstance(event_time, datetime):
            raise InvalidInput(f"event_time must be a datetime, not {type(event_time).__name__}")
        changes["event_time"] = to_utc(event_time)
    if not changes:
        raise InvalidInput("nothing to update: give content, keywords, tags, context, metadata or event_time")
    return changes
