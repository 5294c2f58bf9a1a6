"""The PostgreSQL schema (versioned migrations, applied under an advisory lock), row and vector mapping,
and URL helpers.

Everything lives in the ``amem`` schema, so amem's tables never collide with an application's own in a
shared database; connections put it first on the search path, pgvector's types come from ``public``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from ..embed.base import Vectors
from ..errors import StoreError
from ..notes import Note, NoteVersion

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
    (
        # upkeep: status (archived and merged notes leave search), pin, expiry, supersession, provenance,
        # usage counters; versions remember the consolidation run that wrote them, and the order they were
        # written in (``seq``: a run is undone newest first). Constant defaults: no table rewrite for notes.
        # Idempotent, so a database given these columns by hand (or by a test) still migrates.
        3,
        """
        ALTER TABLE notes
            ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'active',
            ADD COLUMN IF NOT EXISTS pinned boolean NOT NULL DEFAULT false,
            ADD COLUMN IF NOT EXISTS expires_at timestamptz,
            ADD COLUMN IF NOT EXISTS superseded_by text,
            ADD COLUMN IF NOT EXISTS merged_into text,
            ADD COLUMN IF NOT EXISTS sources jsonb NOT NULL DEFAULT '[]',
            ADD COLUMN IF NOT EXISTS retrievals integer NOT NULL DEFAULT 0,
            ADD COLUMN IF NOT EXISTS last_retrieved_at timestamptz;
        CREATE INDEX IF NOT EXISTS notes_status ON notes (status);
        ALTER TABLE versions
            ADD COLUMN IF NOT EXISTS batch text,
            ADD COLUMN IF NOT EXISTS seq bigint GENERATED ALWAYS AS IDENTITY;
        CREATE INDEX IF NOT EXISTS versions_batch ON versions (batch, created_at, seq)
            WHERE batch IS NOT NULL;
        """,
    ),
    (
        # words as a query sees them (``text.query_words``: runs of \w): PostgreSQL's parser keeps
        # '/etc/hosts', 'example.com/a', 'v1.2.3' or '/0' as one token, so a note holding a path, URL,
        # version or e-mail address was not found by its parts (SQLite's FTS5 splits them); found by
        # the hostile-input fuzz. Rebuilds the keyword column and its index once.
        4,
        r"""
        DROP INDEX notes_tsv;
        ALTER TABLE notes DROP COLUMN tsv;
        ALTER TABLE notes ADD COLUMN tsv tsvector
            GENERATED ALWAYS AS (
                to_tsvector('amem.amem_english', regexp_replace(search_text, '\W+', ' ', 'g'))
            ) STORED;
        CREATE INDEX notes_tsv ON notes USING gin (tsv);
        """,
    ),
    (
        # grounding: what the checks refused from an LLM answer stays inspectable on the call's record
        5,
        """
        ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS refused jsonb NOT NULL DEFAULT '[]';
        """,
    ),
    (
        # ready for Citus (and still plain PostgreSQL): the user leads every key of the scoped tables, so
        # they can be distributed by user in one co-location group and every scoped statement touches one
        # shard. The empty scope's user becomes ''. Links reference notes by (user, id); a link between
        # two users' notes (possible only by hand in a memory without users) cannot, and is dropped.
        6,
        """
        UPDATE notes SET user_id = '' WHERE user_id IS NULL;
        ALTER TABLE notes ALTER COLUMN user_id SET DEFAULT '', ALTER COLUMN user_id SET NOT NULL;
        ALTER TABLE links DROP CONSTRAINT links_source_id_fkey, DROP CONSTRAINT links_target_id_fkey,
            DROP CONSTRAINT links_pkey, ADD COLUMN user_id text;
        UPDATE links l SET user_id = n.user_id FROM notes n WHERE n.id = l.source_id;
        DELETE FROM links l WHERE l.user_id IS NULL
            OR NOT EXISTS (SELECT 1 FROM notes t WHERE t.id = l.target_id AND t.user_id = l.user_id);
        ALTER TABLE notes DROP CONSTRAINT notes_pkey, DROP CONSTRAINT notes_rid_key,
            ADD PRIMARY KEY (user_id, id);
        CREATE INDEX notes_id ON notes (id);
        CREATE INDEX notes_rid ON notes (rid);
        ALTER TABLE links ALTER COLUMN user_id SET NOT NULL,
            ADD PRIMARY KEY (user_id, source_id, target_id),
            ADD FOREIGN KEY (user_id, source_id) REFERENCES notes (user_id, id) ON DELETE CASCADE,
            ADD FOREIGN KEY (user_id, target_id) REFERENCES notes (user_id, id) ON DELETE CASCADE;
        DROP INDEX links_target;
        CREATE INDEX links_target ON links (user_id, target_id);
        ALTER TABLE versions ADD COLUMN user_id text;
        UPDATE versions v SET user_id = n.user_id FROM notes n WHERE n.id = v.note_id;
        UPDATE versions SET user_id = '' WHERE user_id IS NULL;
        ALTER TABLE versions ALTER COLUMN user_id SET NOT NULL, DROP CONSTRAINT versions_pkey,
            ADD PRIMARY KEY (user_id, note_id, version);
        ALTER TABLE llm_calls ADD COLUMN user_id text;
        UPDATE llm_calls c SET user_id = o.user_id FROM (
            SELECT m.call_id, min(n.user_id) AS user_id FROM llm_call_notes m
            JOIN notes n ON n.id = m.note_id GROUP BY m.call_id) o
            WHERE o.call_id = c.id;
        UPDATE llm_calls SET user_id = '' WHERE user_id IS NULL;
        ALTER TABLE llm_calls ALTER COLUMN user_id SET NOT NULL, DROP CONSTRAINT llm_calls_pkey,
            ADD PRIMARY KEY (user_id, id);
        ALTER TABLE llm_call_notes ADD COLUMN user_id text;
        UPDATE llm_call_notes m SET user_id = c.user_id FROM llm_calls c WHERE c.id = m.call_id;
        UPDATE llm_call_notes SET user_id = '' WHERE user_id IS NULL;
        ALTER TABLE llm_call_notes ALTER COLUMN user_id SET NOT NULL, DROP CONSTRAINT llm_call_notes_pkey,
            ADD PRIMARY KEY (user_id, call_id, note_id);
        DROP INDEX llm_call_notes_note;
        CREATE INDEX llm_call_notes_note ON llm_call_notes (user_id, note_id);
        CREATE INDEX llm_calls_id ON llm_calls (id);
        """,
    ),
]

#: the note columns in the order of ``note_params``: what inserts and updates write (the usage counters
#: are written on insert only, and after that by ``record_retrievals``)
NOTE_COLUMNS = (
    "id, content, event_time, ingest_time, updated_at, keywords, tags, context, user_id, agent_id, run_id, "
    "metadata, embedding_model, content_hash, state, version, enrich_attempts, last_error, search_text, "
    "status, pinned, expires_at, superseded_by, merged_into, sources"
)
USAGE_COLUMNS = "retrievals, last_retrieved_at"
#: what a read selects: every column of the note
READ_COLUMNS = f"{NOTE_COLUMNS}, {USAGE_COLUMNS}"
#: the versions table's columns but its insertion counter
VERSION_COLUMNS = "note_id, version, cause, created_at, llm_call_id, detail, snapshot, batch"


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
        note.user_id or "",  # the empty scope's user is '' (the distribution key is never NULL)
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
        note.status.value,
        note.pinned,
        note.expires_at,
        note.superseded_by,
        note.merged_into,
        Jsonb(clean_text(note.sources), dumps=_dumps),
    ]
    return [clean_text(v) if isinstance(v, str) else v for v in plain]


def row_note(row: dict[str, Any]) -> Note:
    """psycopg already gives datetimes, booleans and decoded jsonb, so the row's note columns are the note
    (but the user: '' stands for none)."""
    fields = {k: v for k, v in row.items() if k in Note.model_fields}
    fields["user_id"] = fields.get("user_id") or None
    return Note.model_validate(fields)


def row_version(row: dict[str, Any]) -> NoteVersion:
    """The columns and the snapshot together are the version; a snapshot written before a field existed
    leaves it at its default (no links recorded: ``links`` is None)."""
    columns = {k: v for k, v in row.items() if k != "snapshot"}
    return NoteVersion.model_validate({**columns, **row["snapshot"]})


def redact(url: str) -> str:
    """The URL without its password (in the user part or as a ``password=`` parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = urlencode(
        [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="/:",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def vector_literal(vector: Vectors) -> str:
    return "[" + ",".join(repr(float(x)) for x in np.asarray(vector, dtype=np.float32)) + "]"


def parse_vector(text: str) -> Vectors:
    return np.array([float(x) for x in text.strip("[]").split(",")], dtype=np.float32)


def fresh_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server (dropping an earlier one of that name); its URL.
    For benchmarks and tests, which need an empty store per run."""
    import psycopg

    if not name.replace("_", "").isalnum():
        raise StoreError(f"bad database name {name!r}: use letters, digits and '_'")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def migrate_schema(conn: Any, url: str, migrations: list[tuple[int, str]]) -> None:
    """Apply the missing migrations under the advisory lock (two processes opening at once: one migrates)."""
    import psycopg

    newest = max(v for v, _ in migrations)
    if conn.execute(f"SELECT to_regclass('{SCHEMA}.schema_migrations') IS NOT NULL").fetchone()[0]:
        done = conn.execute(f"SELECT max(version) FROM {SCHEMA}.schema_migrations").fetchone()[0]
        if done == newest:
            return  # up to date: no DDL, so a role with data privileges only can open the store
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (LOCK_KEY,))
        present = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
        if present is None:
            try:
                with conn.transaction():
                    conn.execute("CREATE EXTENSION vector SCHEMA public")
            except psycopg.Error as exc:
                raise StoreError(
                    f"pgvector is not enabled in {url} and this role cannot enable it ({exc}); "
                    "ask an administrator to run CREATE EXTENSION vector"
                ) from exc
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(f"SET LOCAL search_path = {SCHEMA}, public")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}
        if done and max(done) > newest:
            raise StoreError(
                f"{url} was written by a newer amem (schema {max(done)} > {newest}); upgrade amem"
            )
        for version, sql in migrations:
            if version not in done:
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
