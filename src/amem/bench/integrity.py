"""Consistency checks run on a store from outside ``amem`` (its own SQL, not the store's code), so a bug
in the store cannot hide itself: used after crashes (``bench/crash.py``) and after concurrent load
(``bench/load.py``).

Each check counts rows that break an invariant the design promises: links join two existing notes of
one exact scope, a note at version v has exactly the versions 1..v, every note has its vector and (on
SQLite) its FTS row, and no exact-duplicate content is active twice in one scope.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..store import sqlite_path, store_kind
from ..store.base import chunks

#: the same scope on both ends: NULL matches only NULL (links join notes of the same exact scope)
_SAME_SCOPE = """(s.user_id IS NOT DISTINCT FROM t.user_id AND s.agent_id IS NOT DISTINCT FROM t.agent_id
                  AND s.run_id IS NOT DISTINCT FROM t.run_id)"""

#: invariant -> a query counting the rows that break it (portable between SQLite and PostgreSQL)
COUNTS: dict[str, str] = {
    "torn_links": """SELECT count(*) FROM links l
                     WHERE NOT EXISTS (SELECT 1 FROM notes n WHERE n.id = l.source_id)
                     OR NOT EXISTS (SELECT 1 FROM notes n WHERE n.id = l.target_id)""",
    "cross_scope_links": f"""SELECT count(*) FROM links l JOIN notes s ON s.id = l.source_id
                             JOIN notes t ON t.id = l.target_id WHERE NOT {_SAME_SCOPE}""",
    "self_links": "SELECT count(*) FROM links WHERE source_id = target_id",
    "version_gaps": """SELECT count(*) FROM notes n LEFT JOIN
                       (SELECT note_id, count(*) AS c, max(version) AS m, min(version) AS lo
                        FROM versions GROUP BY note_id) v ON v.note_id = n.id
                       WHERE v.c IS NULL OR v.c <> n.version OR v.m <> n.version OR v.lo <> 1""",
    "orphan_versions": """SELECT count(*) FROM versions v
                          WHERE NOT EXISTS (SELECT 1 FROM notes n WHERE n.id = v.note_id)""",
    "duplicate_content": """SELECT coalesce(sum(c - 1), 0) FROM (SELECT count(*) AS c FROM notes
                            WHERE status = 'active'
                            GROUP BY content_hash, user_id, agent_id, run_id HAVING count(*) > 1) d""",
}
SQLITE_COUNTS: dict[str, str] = {
    "missing_fts_rows": "SELECT count(*) FROM notes WHERE rid NOT IN (SELECT rowid FROM notes_fts)",
    "stray_fts_rows": "SELECT count(*) FROM notes_fts WHERE rowid NOT IN (SELECT rid FROM notes)",
    "bad_vectors": """SELECT count(*) FROM notes WHERE length(embedding) <>
                      4 * coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'dimensions'), 0)""",
}
#: PostgreSQL keys links and versions by (user, id) (Citus joins only on the distribution column): the
#: same invariants, joined by user too (a link to another user's note counts as torn)
PG_KEYED: dict[str, str] = {
    "torn_links": """SELECT count(*) FROM links l WHERE
                     NOT EXISTS (SELECT 1 FROM notes n WHERE n.user_id = l.user_id AND n.id = l.source_id)
                     OR NOT EXISTS
                     (SELECT 1 FROM notes n WHERE n.user_id = l.user_id AND n.id = l.target_id)""",
    "cross_scope_links": f"""SELECT count(*) FROM links l
                             JOIN notes s ON s.user_id = l.user_id AND s.id = l.source_id
                             JOIN notes t ON t.user_id = l.user_id AND t.id = l.target_id
                             WHERE NOT {_SAME_SCOPE}""",
    "version_gaps": """SELECT count(*) FROM notes n LEFT JOIN
                       (SELECT user_id, note_id, count(*) AS c, max(version) AS m, min(version) AS lo
                        FROM versions GROUP BY user_id, note_id) v
                       ON v.user_id = n.user_id AND v.note_id = n.id
                       WHERE v.c IS NULL OR v.c <> n.version OR v.m <> n.version OR v.lo <> 1""",
    "orphan_versions": """SELECT count(*) FROM versions v WHERE NOT EXISTS
                          (SELECT 1 FROM notes n WHERE n.user_id = v.user_id AND n.id = v.note_id)""",
}
PG_COUNTS: dict[str, str] = {
    "bad_vectors": """SELECT count(*) FROM notes WHERE embedding IS NULL OR vector_dims(embedding) <>
                      coalesce((SELECT value::int FROM meta WHERE key = 'dimensions'), 0)""",
    "missing_tsv": "SELECT count(*) FROM notes WHERE tsv IS NULL",
}


@dataclass
class Consistency:
    """What the checks found; ``ok`` only when the engine's own check passed and every count is zero."""

    engine_check: str = "not run"
    checked: str = ""  # what the engine check consisted of
    counts: dict[str, int] = field(default_factory=dict)
    notes: int = 0
    links: int = 0
    versions: int = 0

    @property
    def ok(self) -> bool:
        return self.engine_check == "ok" and not any(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def check_store(url: str) -> Consistency:
    """Run every check on the store at ``url`` (SQLite file or PostgreSQL URL); no writer may be running
    for the counts to be exact."""
    path = sqlite_path(url)
    if path is not None:
        return _check_sqlite(path)
    if store_kind(url) == "postgresql":
        return _check_postgres(url)
    raise ValueError(f"cannot check {url!r}: give sqlite:///PATH or postgresql://...")


def _check_sqlite(path: Path) -> Consistency:
    db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    try:
        # a crash must leave nothing for the next open to trip on: the engine's page-level check, foreign
        # keys, and FTS5's own comparison of its index with its content
        engine = [str(r[0]) for r in db.execute("PRAGMA integrity_check")]
        fk = db.execute("PRAGMA foreign_key_check").fetchall()
        try:
            db.execute("INSERT INTO notes_fts(notes_fts) VALUES ('integrity-check')")
            fts = "ok"
        except sqlite3.Error as exc:
            fts = f"fts5: {exc}"
        result = Consistency(
            engine_check="ok" if engine == ["ok"] and fts == "ok" else "; ".join([*engine, fts]),
            checked="PRAGMA integrity_check, PRAGMA foreign_key_check, FTS5 integrity-check",
        )
        result.counts["foreign_key_violations"] = len(fk)
        _count(result, lambda sql: db.execute(sql).fetchone()[0], {**COUNTS, **SQLITE_COUNTS})
        return result
    finally:
        db.close()


def _check_postgres(url: str) -> Consistency:
    import psycopg

    with psycopg.connect(url, autocommit=True, options="-c search_path=amem,public") as conn:
        # PostgreSQL recovers by itself after a client dies; what a client's crash could break is the
        # data's own invariants, plus the B-tree indexes when amcheck is there to verify them
        engine, checked = _amcheck(conn)
        result = Consistency(engine_check=engine, checked=checked)
        _count(result, lambda sql: conn.execute(sql).fetchone()[0], {**COUNTS, **PG_KEYED, **PG_COUNTS})  # type: ignore[index]
        return result


def _amcheck(conn: Any) -> tuple[str, str]:
    import psycopg

    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    except psycopg.Error:
        return "ok", "amcheck unavailable: invariant queries only"
    bad = []
    indexes = conn.execute(
        """SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           JOIN pg_namespace s ON s.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam
           WHERE s.nspname = 'amem' AND a.amname = 'btree'"""
    ).fetchall()
    for (name,) in indexes:
        try:
            conn.execute("SELECT bt_index_check(%s::regclass, true)", (f"amem.{name}",))
        except psycopg.Error as exc:
            bad.append(f"{name}: {exc}")
    return "; ".join(bad) or "ok", f"amcheck bt_index_check (heapallindexed) on {len(indexes)} B-tree indexes"


def _count(result: Consistency, scalar: Callable[[str], Any], queries: dict[str, str]) -> None:
    for name, sql in queries.items():
        result.counts[name] = int(scalar(sql))
    result.notes = int(scalar("SELECT count(*) FROM notes"))
    result.links = int(scalar("SELECT count(*) FROM links"))
    result.versions = int(scalar("SELECT count(*) FROM versions"))


def read_rows(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of one query (``?`` placeholders, rewritten for PostgreSQL), read beside the store's code."""
    path = sqlite_path(url)
    if path is not None:
        db = sqlite3.connect(str(path), timeout=30.0)
        try:
            return [tuple(r) for r in db.execute(sql, list(params))]
        finally:
            db.close()
    import psycopg

    with psycopg.connect(url, autocommit=True, options="-c search_path=amem,public") as conn:
        return [tuple(r) for r in conn.execute(sql.replace("?", "%s"), list(params)).fetchall()]


@dataclass
class NoteFacts:
    """What is stored about one note: enough to tell whether a write that returned survived."""

    versions: int = 0
    causes: dict[int, str] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)


def note_facts(url: str, ids: Iterable[str]) -> dict[str, NoteFacts]:
    """The stored facts of the given notes (absent ids are left out)."""
    out: dict[str, NoteFacts] = {}
    for batch in chunks(list(dict.fromkeys(ids)), 500):
        marks = ",".join("?" * len(batch))
        for (nid,) in read_rows(url, f"SELECT id FROM notes WHERE id IN ({marks})", batch):
            out[nid] = NoteFacts()
        for nid, version, cause in read_rows(
            url, f"SELECT note_id, version, cause FROM versions WHERE note_id IN ({marks})", batch
        ):
            if nid in out:
                out[nid].versions += 1
                out[nid].causes[int(version)] = str(cause)
        for source, target in read_rows(
            url, f"SELECT source_id, target_id FROM links WHERE source_id IN ({marks})", batch
        ):
            if source in out:
                out[source].links.add(target)
    return out


def ids_by_hash(url: str) -> dict[tuple[str, str | None, str | None, str | None], list[str]]:
    """(content hash, scope) -> the ids of the active notes holding that content."""
    out: dict[tuple[str, str | None, str | None, str | None], list[str]] = {}
    for nid, digest, user, agent, run in read_rows(
        url, "SELECT id, content_hash, user_id, agent_id, run_id FROM notes WHERE status = 'active'"
    ):
        out.setdefault((digest, user, agent, run), []).append(nid)
    return out
