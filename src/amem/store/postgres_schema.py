"""The PostgreSQL schema (versioned migrations, applied under an advisory lock) and row mapping.

Everything lives in the ``amem`` schema, so amem's tables never collide with an application's own in a
shared database; connections put it first on the search path, pgvector's types come from ``public``.
"""

from __future__ import annotations

import json
from typing import Any

from ..notes import Note

SCHEMA = "amem"
#: the advisory lock key that serialises migrations (and the first vector-column sizing) across processes
LOCK_KEY = "amem:migrate"

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
        CREATE TABLE notes (
            rid bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            id text PRIMARY KEY,
            content text NOT NULL,
            event_time timestamptz NOT NULL,
            ingest_time timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            keywords jsonb NOT NULL,
            tags jsonb NOT NULL,
            context text NOT NULL,
            user_id text, agent_id text, run_id text,
            metadata jsonb NOT NULL,
            embedding_model text NOT NULL,
            content_hash text NOT NULL,
            state text NOT NULL,
            version integer NOT NULL,
            enrich_attempts integer NOT NULL,
            last_error text,
            search_text text NOT NULL,
            tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', search_text)) STORED,
            embedding vector NOT NULL
        );
        CREATE INDEX notes_scope ON notes (user_id, agent_id, run_id);
        CREATE INDEX notes_hash ON notes (content_hash);
        CREATE INDEX notes_state ON notes (state);
        CREATE INDEX notes_event ON notes (event_time);
        CREATE INDEX notes_ingest ON notes (ingest_time, rid);
        CREATE INDEX notes_tsv ON notes USING gin (tsv);
        CREATE TABLE links (
            source_id text NOT NULL REFERENCES notes (id) ON DELETE CASCADE,
            target_id text NOT NULL REFERENCES notes (id) ON DELETE CASCADE,
            weight double precision NOT NULL,
            reason text NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            llm_call_id text,
            PRIMARY KEY (source_id, target_id)
        );
        CREATE INDEX links_target ON links (target_id);
        CREATE TABLE versions (
            note_id text NOT NULL,
            version integer NOT NULL,
            cause text NOT NULL,
            created_at timestamptz NOT NULL,
            llm_call_id text,
            detail text NOT NULL,
            snapshot jsonb NOT NULL,
            PRIMARY KEY (note_id, version)
        );
        CREATE TABLE llm_calls (
            id text PRIMARY KEY,
            step text NOT NULL,
            prompt_version text NOT NULL,
            model text NOT NULL,
            input_tokens integer NOT NULL,
            output_tokens integer NOT NULL,
            latency_ms double precision NOT NULL,
            ok boolean NOT NULL,
            cached boolean NOT NULL,
            error text,
            attempts integer NOT NULL,
            note_ids jsonb NOT NULL,
            created_at timestamptz NOT NULL
        );
        CREATE INDEX llm_calls_created ON llm_calls (created_at);
        CREATE TABLE llm_call_notes (
            call_id text NOT NULL, note_id text NOT NULL, PRIMARY KEY (call_id, note_id)
        );
        CREATE INDEX llm_call_notes_note ON llm_call_notes (note_id);
        CREATE TABLE llm_cache (key text PRIMARY KEY, value text NOT NULL, created_at timestamptz NOT NULL);
        """,
    ),
    (
        # English stemming that keeps stop words in the index, as SQLite's FTS5 does: queries leave them
        # out unless nothing else remains ("who was she?"), and then they must still be findable
        2,
        """
        CREATE TEXT SEARCH DICTIONARY amem_english_stem (TEMPLATE = snowball, Language = english);
        CREATE TEXT SEARCH CONFIGURATION amem_english (COPY = pg_catalog.english);
        ALTER TEXT SEARCH CONFIGURATION amem_english
            ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
            WITH amem_english_stem;
        DROP INDEX notes_tsv;
        ALTER TABLE notes DROP COLUMN tsv;
        ALTER TABLE notes ADD COLUMN tsv tsvector
            GENERATED ALWAYS AS (to_tsvector('amem.amem_english', search_text)) STORED;
        CREATE INDEX notes_tsv ON notes USING gin (tsv);
        """,
    ),
]

NOTE_COLUMNS = (
    "id, content, event_time, ingest_time, updated_at, keywords, tags, context, user_id, agent_id, run_id, "
    "metadata, embedding_model, content_hash, state, version, enrich_attempts, last_error, search_text"
)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)  # as the SQLite store: non-JSON metadata values become text


def clean_text(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL characters (SQLite can): they become U+FFFD, so a note
    with one is stored rather than lost."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [clean_text(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(k): clean_text(v) for k, v in value.items()}
    return value


def note_params(note: Note) -> list[Any]:
    from psycopg.types.json import Jsonb

    plain = [
        note.id,
        note.content,
        note.event_time,
        note.ingest_time,
        note.updated_at,
        Jsonb(clean_text(note.keywords)),
        Jsonb(clean_text(note.tags)),
        note.context,
        note.user_id,
        note.agent_id,
        note.run_id,
        Jsonb(clean_text(note.metadata), dumps=_dumps),
        note.embedding_model,
        note.content_hash,
        note.state.value,
        note.version,
        note.enrich_attempts,
        note.last_error,
        note.keyword_text(),
    ]
    return [clean_text(v) if isinstance(v, str) else v for v in plain]


def row_note(row: dict[str, Any]) -> Note:
    """psycopg already gives datetimes and decoded jsonb, so the row's note columns are the note."""
    return Note.model_validate({k: v for k, v in row.items() if k in Note.model_fields})
