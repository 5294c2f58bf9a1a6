"""Citus: the PostgreSQL store's tables distributed by user, so a memory outgrows one server.

Every scoped table (notes, links, versions, LLM calls and their note map) is keyed by ``user_id`` first
(migration 6) and distributed on it in one co-location group: a user's notes, links and history live on
one shard, and a statement that names the user runs there alone. The LLM cache is distributed by its key
(its own group); the metadata tables are reference tables (a copy on every node). Opening the store on a
database with the citus extension distributes whatever is not yet distributed, so it is idempotent and
`amem migrate` into a Citus database needs nothing else. Citus creates the HNSW and GIN indexes per shard.
"""

from __future__ import annotations

from typing import Any

from .postgres_schema import LOCK_KEY, SCHEMA

#: distributed by user, co-located with notes (the first one), in this order (foreign keys follow notes)
BY_USER = ("notes", "links", "versions", "llm_calls", "llm_call_notes")
#: distributed by their own key
BY_KEY = {"llm_cache": "key"}
#: a copy on every node
REFERENCE = ("meta", "schema_migrations")


def enabled(conn: Any) -> bool:
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchone() is not None


def distributed_tables(conn: Any) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid "
        "JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = %s",
        (SCHEMA,),
    ).fetchall()
    return {r[0] for r in rows}


#: the keyword column and its index, as migration 4 made them (rebuilt by ``_share_text_search``)
TSV_COLUMN = r"""
    ALTER TABLE amem.notes ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
        to_tsvector('amem.amem_english', regexp_replace(search_text, '\W+', ' ', 'g'))) STORED;
    CREATE INDEX notes_tsv ON amem.notes USING gin (tsv)"""


def _share_text_search(conn: Any) -> None:
    """Citus creates on its workers the text search configuration it saw made, but not one made before
    the extension was enabled (a memory that was plain PostgreSQL first): rename that one away, make it
    again (Citus now copies it to every node), point the keyword column at it, drop the old one. The
    notes table is still local here, so rebuilding its keyword column is one local rewrite."""
    known = conn.execute(
        "SELECT 1 FROM pg_dist_object WHERE classid = 'pg_ts_config'::regclass "
        "AND objid = 'amem.amem_english'::regconfig"
    ).fetchone()
    if known is not None:
        return
    with conn.transaction():
        conn.execute("ALTER TEXT SEARCH CONFIGURATION amem.amem_english RENAME TO amem_english_old")
        conn.execute("ALTER TEXT SEARCH DICTIONARY amem.amem_english_stem RENAME TO amem_english_stem_old")
        conn.execute(
            "CREATE TEXT SEARCH DICTIONARY amem.amem_english_stem (TEMPLATE = snowball, Language = english)"
        )
        conn.execute("CREATE TEXT SEARCH CONFIGURATION amem.amem_english (COPY = amem.amem_english_old)")
        conn.execute(
            "ALTER TEXT SEARCH CONFIGURATION amem.amem_english ALTER MAPPING FOR asciiword, asciihword, "
            "hword_asciipart, word, hword, hword_part WITH amem.amem_english_stem"
        )
        conn.execute("DROP INDEX amem.notes_tsv")
        conn.execute("ALTER TABLE amem.notes DROP COLUMN tsv")
        for statement in TSV_COLUMN.split(";"):
            conn.execute(statement)
        conn.execute("DROP TEXT SEARCH CONFIGURATION amem.amem_english_old")
        conn.execute("DROP TEXT SEARCH DICTIONARY amem.amem_english_stem_old")


def prepare(conn: Any) -> bool:
    """Distribute amem's tables if this database runs Citus (an autocommit connection); whether it does.
    Under the migration lock, so two processes opening a new database at once distribute it once."""
    if not enabled(conn):
        return False
    done = distributed_tables(conn)
    if done >= {*BY_USER, *BY_KEY, *REFERENCE}:
        return True
    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (LOCK_KEY,))
    try:
        done = distributed_tables(conn)
        if "notes" not in done:
            _share_text_search(conn)
        for table in BY_USER:
            if table not in done:
                group = "default" if table == BY_USER[0] else f"{SCHEMA}.{BY_USER[0]}"
                conn.execute(
                    "SELECT create_distributed_table(%s, 'user_id', colocate_with => %s)",
                    (f"{SCHEMA}.{table}", group),
                )
        for table, column in BY_KEY.items():
            if table not in done:
                conn.execute(
                    "SELECT create_distributed_table(%s, %s, colocate_with => 'none')",
                    (f"{SCHEMA}.{table}", column),
                )
        for table in REFERENCE:
            if table not in done:
                conn.execute("SELECT create_reference_table(%s)", (f"{SCHEMA}.{table}",))
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (LOCK_KEY,))
    return True
