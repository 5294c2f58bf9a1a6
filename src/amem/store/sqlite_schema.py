"""The SQLite schema (versioned migrations) and the mapping between rows and notes."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from typing import Any

from ..notes import EnrichState, Note, NoteStatus

#: Fixed-width UTC timestamps, so that text comparison in SQL is time comparison.
TIME_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE notes (
            rid INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            content TEXT NOT NULL,
            event_time TEXT NOT NULL,
            ingest_time TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            keywords TEXT NOT NULL,
            tags TEXT NOT NULL,
            context TEXT NOT NULL,
            user_id TEXT, agent_id TEXT, run_id TEXT,
            metadata TEXT NOT NULL,
            embedding_model TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            state TEXT NOT NULL,
            version INTEGER NOT NULL,
            enrich_attempts INTEGER NOT NULL,
            last_error TEXT,
            embedding BLOB NOT NULL
        );
        CREATE INDEX notes_scope ON notes(user_id, agent_id, run_id);
        CREATE INDEX notes_hash ON notes(content_hash);
        CREATE INDEX notes_state ON notes(state);
        CREATE INDEX notes_event ON notes(event_time);
        CREATE INDEX notes_ingest ON notes(ingest_time);
        CREATE VIRTUAL TABLE notes_fts USING fts5(text, tokenize = 'porter unicode61 remove_diacritics 2');
        CREATE TABLE links (
            source_id TEXT NOT NULL REFERENCES notes(id) ON DELETE CASCADE,
            target_id TEXT NOT NULL REFERENCES notes(id) ON DELETE CASCADE,
            weight REAL NOT NULL,
            reason TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            llm_call_id TEXT,
            PRIMARY KEY (source_id, target_id)
        );
        CREATE INDEX links_target ON links(target_id);
        CREATE TABLE versions (
            note_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            cause TEXT NOT NULL,
            created_at TEXT NOT NULL,
            llm_call_id TEXT,
            detail TEXT NOT NULL,
            snapshot TEXT NOT NULL,
            PRIMARY KEY (note_id, version)
        );
        CREATE TABLE llm_calls (
            id TEXT PRIMARY KEY,
            step TEXT NOT NULL,
            prompt_version TEXT NOT NULL,
            model TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            latency_ms REAL NOT NULL,
            ok INTEGER NOT NULL,
            cached INTEGER NOT NULL,
            error TEXT,
            attempts INTEGER NOT NULL,
            note_ids TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE llm_call_notes (
            call_id TEXT NOT NULL, note_id TEXT NOT NULL, PRIMARY KEY (call_id, note_id)
        );
        CREATE INDEX llm_call_notes_note ON llm_call_notes(note_id);
        CREATE TABLE llm_cache (key TEXT PRIMARY KEY, value TEXT NOT NULL, created_at TEXT NOT NULL);
        """,
    ),
    (
        # upkeep: status (archived and merged notes leave search), pin, expiry, supersession, provenance,
        # usage counters; versions remember the consolidation run that wrote them
        2,
        """
        ALTER TABLE notes ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
        ALTER TABLE notes ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE notes ADD COLUMN expires_at TEXT;
        ALTER TABLE notes ADD COLUMN superseded_by TEXT;
        ALTER TABLE notes ADD COLUMN merged_into TEXT;
        ALTER TABLE notes ADD COLUMN sources TEXT NOT NULL DEFAULT '[]';
        ALTER TABLE notes ADD COLUMN retrievals INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE notes ADD COLUMN last_retrieved_at TEXT;
        CREATE INDEX notes_status ON notes(status);
        ALTER TABLE versions ADD COLUMN batch TEXT;
        CREATE INDEX versions_batch ON versions(batch) WHERE batch IS NOT NULL;
        """,
    ),
    (
        # grounding: what the checks refused from an LLM answer stays inspectable on the call's record
        3,
        """
        ALTER TABLE llm_calls ADD COLUMN refused TEXT NOT NULL DEFAULT '[]';
        """,
    ),
]

#: the note columns in the order of ``note_row`` (the usage counters are written by their own statement)
NOTE_COLUMNS = (
    "id, content, event_time, ingest_time, updated_at, keywords, tags, context, user_id, agent_id, run_id, "
    "metadata, embedding_model, content_hash, state, version, enrich_attempts, last_error, status, pinned, "
    "expires_at, superseded_by, merged_into, sources"
)


def fmt_time(value: datetime) -> str:
    # the year zero-padded by hand: glibc's %Y writes year 99 as "99", which sorts after "2024" (time
    # filters went wrong) and which fromisoformat cannot read back (the note became unreadable)
    utc = value.astimezone(timezone.utc)
    return f"{utc.year:04d}" + utc.strftime(TIME_FMT[2:])


def parse_time(value: str) -> datetime:
    # fromisoformat is ~10x faster than strptime (reading 10^5 notes spent 20 s here); the stored text
    # is always TIME_FMT, whose trailing Z Python 3.10's fromisoformat does not accept
    if value.index("-") != 4:  # a year before 1000 written unpadded by an older fmt_time
        value = value.zfill(len(value) + 4 - value.index("-"))
    return datetime.fromisoformat(value[:-1]).replace(tzinfo=timezone.utc)


def opt_time(value: datetime | None) -> str | None:
    return None if value is None else fmt_time(value)


def parse_opt_time(value: str | None) -> datetime | None:
    return None if value is None else parse_time(value)


def note_row(note: Note) -> tuple[Any, ...]:
    return (
        note.id,
        note.content,
        fmt_time(note.event_time),
        fmt_time(note.ingest_time),
        fmt_time(note.updated_at),
        json.dumps(note.keywords),
        json.dumps(note.tags),
        note.context,
        note.user_id,
        note.agent_id,
        note.run_id,
        json.dumps(note.metadata, default=str),
        note.embedding_model,
        note.content_hash,
        note.state.value,
        note.version,
        note.enrich_attempts,
        note.last_error,
        note.status.value,
        int(note.pinned),
        opt_time(note.expires_at),
        note.superseded_by,
        note.merged_into,
        json.dumps(note.sources, default=str),
    )


def row_note(row: sqlite3.Row) -> Note:
    return Note(
        id=row["id"],
        content=row["content"],
        event_time=parse_time(row["event_time"]),
        ingest_time=parse_time(row["ingest_time"]),
        updated_at=parse_time(row["updated_at"]),
        keywords=json.loads(row["keywords"]),
        tags=json.loads(row["tags"]),
        context=row["context"],
        user_id=row["user_id"],
        agent_id=row["agent_id"],
        run_id=row["run_id"],
        metadata=json.loads(row["metadata"]),
        embedding_model=row["embedding_model"],
        content_hash=row["content_hash"],
        state=EnrichState(row["state"]),
        version=row["version"],
        enrich_attempts=row["enrich_attempts"],
        last_error=row["last_error"],
        status=NoteStatus(row["status"]),
        pinned=bool(row["pinned"]),
        expires_at=parse_opt_time(row["expires_at"]),
        superseded_by=row["superseded_by"],
        merged_into=row["merged_into"],
        sources=json.loads(row["sources"]),
        retrievals=row["retrievals"],
        last_retrieved_at=parse_opt_time(row["last_retrieved_at"]),
    )
