"""SQLite store: WAL, FTS5 (BM25), float32 vectors in BLOBs, exact search over an in-memory matrix.

One connection per Store guarded by a re-entrant lock, so a Memory can be shared between threads.
The vector matrix changes only after a commit; another process's commit is noticed through
``PRAGMA data_version`` and triggers a reload before the next search.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..embed.base import Vectors
from ..errors import StoreError
from ..notes import Note, NoteStatus, Scope
from ..text import query_words
from .base import Filters, chunks, scope_clauses
from .sqlite_history import SQLiteHistory
from .sqlite_schema import (
    MIGRATIONS,
    NOTE_COLUMNS,
    fmt_time,
    note_row,
    opt_time,
    row_note,
)
from .vector_index import VectorIndex

#: A query term found in more than this share of all notes is left out of a keyword search when rarer
#: terms remain: BM25 gives it little weight (idf below log 4), yet scoring its matches is most of the
#: cost (a speaker's name is in half of a conversation's turns). Measured on LoCoMo: see BENCHMARKS.md.
COMMON_TERM_SHARE = 0.2


def fts_terms(text: str) -> list[str]:
    """Any user text becomes quoted terms: FTS5 syntax in the text can never be injected."""
    return ['"' + w.replace('"', "") + '"' for w in query_words(text)]


class SQLiteStore(SQLiteHistory):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0
        self._after_commit: list[Callable[[], None]] = []
        self._index: VectorIndex | None = None
        self.common_term_share = COMMON_TERM_SHARE
        self._data_version = -1
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._migrate()

    # -- plumbing -----------------------------------------------------------------------------
    def _migrate(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)"
            )
            done = {r[0] for r in self._db.execute("SELECT version FROM schema_migrations")}
            for version, sql in MIGRATIONS:
                if version in done:
                    continue
                for statement in [s for s in sql.split(";") if s.strip()]:
                    self._db.execute(statement)
                self._db.execute("INSERT INTO schema_migrations VALUES (?, datetime('now'))", (version,))
            newest = max(v for v, _ in MIGRATIONS)
            if done and max(done) > newest:
                raise StoreError(
                    f"{self.path} was written by a newer amem (schema {max(done)} > {newest}); upgrade amem"
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def bound(self, user_id: str) -> SQLiteStore:
        """One file holds every user: a user's handle is the store itself."""
        return self

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def bulk(self, expected: int) -> AbstractContextManager[None]:
        return nullcontext()  # exact search over a matrix and FTS5 need no deferred upkeep

    @contextmanager
    def atomic(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                try:
                    self._db.execute("BEGIN IMMEDIATE")  # waits up to busy_timeout for other writers
                except sqlite3.Error as exc:
                    raise StoreError(f"SQLite could not start a write transaction: {exc}") from exc
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                    self._after_commit.clear()
                raise
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("COMMIT")
                pending, self._after_commit = self._after_commit, []
                # data_version is left alone: if another process committed meanwhile, the next
                # search must still see its change and reload.
                for fn in pending:
                    fn()

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """Run one statement and read all its rows while holding the lock. A cursor stepped after the
        lock was released kept a read transaction open on the shared connection: another thread's
        BEGIN IMMEDIATE then failed at once with "database is locked" (a stale snapshot cannot take
        the write lock, and SQLite skips the busy timeout), and that read could see the other
        thread's uncommitted writes."""
        with self._lock:
            try:
                cur = self._db.execute(sql, params)
                return Rows(cur.fetchall(), cur.lastrowid)
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite error: {exc}") from exc

    def _write(self, fn: Callable[[], object]) -> None:
        with self.atomic():
            fn()

    def _on_commit(self, fn: Callable[[], None]) -> None:
        if self._depth > 0:
            self._after_commit.append(fn)
        else:
            fn()

    def _read_data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _vectors(self) -> VectorIndex | None:
        """The matrix, loaded on first use and reloaded when another connection has committed."""
        with self._lock:
            current = self._read_data_version()
            if self._index is not None and current == self._data_version:
                return self._index
            dims = self.get_meta("dimensions")
            if dims is None:
                return None
            index = VectorIndex(int(dims))
            for row in self._db.execute(
                "SELECT id, embedding, user_id, agent_id, run_id, status FROM notes ORDER BY rid"
            ):
                vec = np.frombuffer(row["embedding"], dtype=np.float32)
                scope = Scope(user_id=row[2], agent_id=row[3], run_id=row[4])
                index.upsert(row["id"], vec, scope, active=row[5] == NoteStatus.active.value)
            self._index = index
            self._data_version = current
            return index

    # -- meta ---------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._exec("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            lambda: self._exec(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )

    # -- notes --------------------------------------------------------------------------------
    def _check_dims(self, vector: Vectors) -> None:
        dims = self.get_meta("dimensions")
        if dims is None:
            self.set_meta("dimensions", str(vector.shape[0]))
        elif int(dims) != vector.shape[0]:
            raise StoreError(
                f"vector has {vector.shape[0]} dimensions but this memory holds {dims}-dimensional ones; "
                "use the embedder the memory was built with"
            )

    def insert_note(self, note: Note, vector: Vectors) -> None:
        vec = np.asarray(vector, dtype=np.float32)

        def run() -> None:
            self._check_dims(vec)
            row = note_row(note)
            cur = self._exec(
                f"""INSERT INTO notes ({NOTE_COLUMNS}, retrievals, last_retrieved_at, embedding)
                   VALUES ({",".join("?" * (len(row) + 3))})""",
                (*row, note.retrievals, opt_time(note.last_retrieved_at), vec.tobytes()),
            )
            self._exec(
                "INSERT INTO notes_fts(rowid, text) VALUES (?, ?)", (cur.lastrowid, note.keyword_text())
            )
            self._on_commit(lambda: self._index_upsert(note, vec))

        self._write(run)

    def _index_upsert(self, note: Note, vec: Vectors) -> None:
        if self._index is not None:
            self._index.upsert(note.id, vec, note.scope, active=note.status == NoteStatus.active)

    def update_note(self, note: Note, vector: Vectors | None = None) -> None:
        def run() -> None:
            row = self._exec("SELECT rid FROM notes WHERE id = ?", (note.id,)).fetchone()
            if row is None:
                raise StoreError(f"note {note.id} vanished during the update; nothing was changed")
            values = note_row(note)[1:]
            sets = ", ".join(f"{c.strip()}=?" for c in NOTE_COLUMNS.split(",")[1:])
            self._exec(f"UPDATE notes SET {sets} WHERE id=?", (*values, note.id))
            if vector is not None:
                vec = np.asarray(vector, dtype=np.float32)
                self._check_dims(vec)
                self._exec("UPDATE notes SET embedding=? WHERE id=?", (vec.tobytes(), note.id))
                self._on_commit(lambda: self._index_upsert(note, vec))
            else:
                current = self.get_vectors([note.id])[note.id]
                self._on_commit(lambda: self._index_upsert(note, current))
            self._exec("DELETE FROM notes_fts WHERE rowid = ?", (row[0],))
            self._exec("INSERT INTO notes_fts(rowid, text) VALUES (?, ?)", (row[0], note.keyword_text()))

        self._write(run)

    def delete_note(self, note_id: str) -> None:
        def run() -> None:
            row = self._exec("SELECT rid FROM notes WHERE id = ?", (note_id,)).fetchone()
            if row is None:
                return
            self._exec("DELETE FROM notes_fts WHERE rowid = ?", (row[0],))
            self._exec("DELETE FROM links WHERE source_id = ? OR target_id = ?", (note_id, note_id))
            self._exec("DELETE FROM versions WHERE note_id = ?", (note_id,))
            self._exec("DELETE FROM notes WHERE id = ?", (note_id,))
            self._on_commit(lambda: self._index.remove(note_id) if self._index else None)

        self._write(run)

    def get_note(self, note_id: str) -> Note | None:
        return self.get_notes([note_id]).get(note_id)

    def get_notes(self, ids: Sequence[str]) -> dict[str, Note]:
        out: dict[str, Note] = {}
        for chunk in chunks(list(dict.fromkeys(ids)), 500):
            marks = ",".join("?" * len(chunk))
            for row in self._exec(f"SELECT * FROM notes WHERE id IN ({marks})", chunk):
                out[row["id"]] = row_note(row)
        return out

    def get_vectors(self, ids: Sequence[str]) -> dict[str, Vectors]:
        out: dict[str, Vectors] = {}
        for chunk in chunks(list(dict.fromkeys(ids)), 500):
            marks = ",".join("?" * len(chunk))
            for row in self._exec(f"SELECT id, embedding FROM notes WHERE id IN ({marks})", chunk):
                out[row[0]] = np.frombuffer(row[1], dtype=np.float32).copy()
        return out

    def _where(self, scope: Scope, filters: Filters | None) -> tuple[str, list[Any]]:
        clauses, params = scope_clauses(scope, "?")
        if filters is not None:
            for key, wanted in filters.metadata.items():
                if wanted is None:
                    clauses.append("json_extract(n.metadata, ?) IS NULL")
                    params.append(f'$."{key}"')
                else:
                    clauses.append("json_extract(n.metadata, ?) = ?")
                    params.extend([f'$."{key}"', int(wanted) if isinstance(wanted, bool) else wanted])
            if filters.event_after is not None:
                clauses.append("n.event_time >= ?")
                params.append(fmt_time(filters.event_after))
            if filters.event_before is not None:
                clauses.append("n.event_time < ?")
                params.append(fmt_time(filters.event_before))
            if filters.ingested_before is not None:
                clauses.append("n.ingest_time < ?")
                params.append(fmt_time(filters.ingested_before))
            if filters.expires_by is not None:
                clauses.append("n.expires_at <= ?")
                params.append(fmt_time(filters.expires_by))
            if filters.states:
                clauses.append(f"n.state IN ({','.join('?' * len(filters.states))})")
                params.extend(s.value for s in filters.states)
            if filters.statuses:
                clauses.append(f"n.status IN ({','.join('?' * len(filters.statuses))})")
                params.extend(s.value for s in filters.statuses)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def list_notes(
        self, scope: Scope, filters: Filters | None = None, limit: int = 100, offset: int = 0
    ) -> list[Note]:
        where, params = self._where(scope, filters)
        rows = self._exec(
            f"SELECT * FROM notes n{where} ORDER BY n.ingest_time DESC, n.rid DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [row_note(r) for r in rows]

    def count_notes(self, scope: Scope, filters: Filters | None = None) -> int:
        where, params = self._where(scope, filters)
        return int(self._exec(f"SELECT count(*) FROM notes n{where}", params).fetchone()[0])

    def tag_counts(self, scope: Scope, filters: Filters | None = None) -> tuple[int, dict[str, int]]:
        where, params = self._where(scope, filters)
        total = self.count_notes(scope, filters)
        rows = self._exec(
            f"SELECT t.value, count(*) FROM notes n, json_each(n.tags) t{where} GROUP BY t.value", params
        )
        return total, {str(r[0]): int(r[1]) for r in rows}

    def iter_notes(self, scope: Scope, batch: int = 500, filters: Filters | None = None) -> Iterator[Note]:
        where, params = self._where(scope, filters)
        last = 0
        while True:
            cond = f"{where} AND n.rid > ?" if where else " WHERE n.rid > ?"
            # NOT INDEXED: walk the table in rowid order (one pass in all) rather than sort the scope's
            # index entries again for every batch (200 sorts of 10^5 rows at 10^5 notes)
            rows = self._exec(
                f"SELECT * FROM notes n NOT INDEXED{cond} ORDER BY n.rid LIMIT ?", [*params, last, batch]
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield row_note(row)
            last = rows[-1]["rid"]

    def find_by_hash(self, scope: Scope, content_hash: str) -> list[str]:
        where, params = self._where(scope, None)
        cond = f"{where} AND n.content_hash = ?" if where else " WHERE n.content_hash = ?"
        return [r[0] for r in self._exec(f"SELECT n.id FROM notes n{cond}", [*params, content_hash])]

    def find_by_hashes(self, scope: Scope, hashes: Sequence[str]) -> dict[str, list[str]]:
        where, params = self._where(scope, None)
        out: dict[str, list[str]] = {}
        for chunk in chunks(list(dict.fromkeys(hashes)), 500):
            marks = ",".join("?" * len(chunk))
            cond = (
                f"{where} AND n.content_hash IN ({marks})" if where else f" WHERE n.content_hash IN ({marks})"
            )
            for r in self._exec(f"SELECT n.content_hash, n.id FROM notes n{cond}", [*params, *chunk]):
                out.setdefault(r[0], []).append(r[1])
        return out

    def lock_hashes(self, scope: Scope, hashes: Sequence[str]) -> None:
        """Nothing to do: a write transaction here is BEGIN IMMEDIATE, one at a time across processes."""

    # -- search -------------------------------------------------------------------------------
    def _allowed(self, scope: Scope, filters: Filters | None) -> tuple[set[str] | None, bool]:
        """The ids a filter admits (None: all), and whether the index's active mask applies instead of
        a status condition (the common case: search asks for active notes)."""
        if filters is None or filters.is_empty():
            return None, False
        active_only = filters.statuses == [NoteStatus.active]
        if active_only:
            filters = filters.with_statuses(None)
            if filters.is_empty():
                return None, True
        where, params = self._where(scope, filters)
        return {r[0] for r in self._exec(f"SELECT n.id FROM notes n{where}", params)}, active_only

    def nearest(
        self,
        vector: Vectors,
        k: int,
        scope: Scope,
        filters: Filters | None = None,
        exclude: Sequence[str] = (),
    ) -> list[tuple[str, float]]:
        with self._lock:
            index = self._vectors()
            if index is None:
                return []
            query = np.asarray(vector, dtype=np.float32)
            if query.shape[0] != index.dimensions:
                raise StoreError(
                    f"query vector has {query.shape[0]} dimensions, memory holds {index.dimensions}"
                )
            allowed, active_only = self._allowed(scope, filters)
            return index.search(query, k, scope, allowed, exclude, active_only)

    def keyword(
        self, query: str, k: int, scope: Scope, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        terms = fts_terms(query)
        if not terms or k <= 0:
            return []
        match = " OR ".join(self._informative(terms))
        where, params = self._where(scope, filters)
        extra = where.replace(" WHERE ", " AND ", 1) if where else ""
        rows = self._exec(
            f"""SELECT n.id, bm25(notes_fts) AS score FROM notes_fts
                JOIN notes n ON n.rid = notes_fts.rowid
                WHERE notes_fts MATCH ?{extra} ORDER BY score LIMIT ?""",
            [match, *params, k],
        )
        return [(r[0], -float(r[1])) for r in rows]

    def _informative(self, terms: list[str]) -> list[str]:
        """The terms without those in more than COMMON_TERM_SHARE of the notes (counting one term's
        matches is far cheaper than scoring them), or all terms when every one is common."""
        index = self._vectors()
        total = len(index) if index is not None else 0
        if len(terms) < 2 or total < 100:
            return terms
        limit = int(total * self.common_term_share)
        rare = [
            t
            for t in terms
            if self._exec(
                "SELECT count(*) FROM (SELECT 1 FROM notes_fts WHERE notes_fts MATCH ? LIMIT ?)",
                [t, limit + 1],
            ).fetchone()[0]
            <= limit
        ]
        return rare or terms

    # -- upkeep -----------------------------------------------------------------------------
    def record_retrievals(self, counts: dict[str, int], at: datetime) -> None:
        def run() -> None:
            for note_id, n in counts.items():
                self._exec(
                    "UPDATE notes SET retrievals = retrievals + ?, last_retrieved_at = ? WHERE id = ?",
                    (n, fmt_time(at), note_id),
                )

        self._write(run)

    def duplicate_groups(self, scope: Scope) -> list[list[str]]:
        where, params = self._where(scope, Filters(statuses=[NoteStatus.active]))
        rows = self._exec(
            f"""SELECT group_concat(id, ' ') FROM (SELECT n.id, n.content_hash, n.user_id, n.agent_id,
                n.run_id FROM notes n{where} ORDER BY n.rid)
                GROUP BY content_hash, user_id, agent_id, run_id HAVING count(*) > 1""",
            params,
        )
        return [str(r[0]).split(" ") for r in rows]

    def similar_pairs(
        self, scope: Scope, threshold: float, since: datetime | None = None, limit: int = 10_000
    ) -> list[tuple[str, str, float]]:
        with self._lock:
            index = self._vectors()
            if index is None:
                return []
            changed = None
            if since is not None:
                where, params = self._where(scope, None)
                cond = f"{where} AND n.updated_at >= ?" if where else " WHERE n.updated_at >= ?"
                changed = {
                    r[0] for r in self._exec(f"SELECT n.id FROM notes n{cond}", [*params, fmt_time(since)])
                }
            return index.similar_pairs(scope, threshold, changed, limit)

    # -- stats --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        counts = {
            table: int(self._exec(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in ("notes", "links", "versions", "llm_calls")
        }
        states = dict(self._exec("SELECT state, count(*) FROM notes GROUP BY state").fetchall())
        size = self.path.stat().st_size if self.path.exists() else 0
        return {**counts, "states": states, "bytes": size, "url": self.url}

    def integrity_check(self) -> str:
        return str(self._exec("PRAGMA integrity_check").fetchone()[0])


class Rows:
    """A statement's rows, read in full (see ``SQLiteStore._exec``), with the cursor's ``lastrowid``."""

    def __init__(self, rows: list[Any], lastrowid: int | None) -> None:
        self.rows, self.lastrowid = rows, lastrowid

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)

    def fetchone(self) -> Any:  # typed as sqlite3.Cursor's: a row, or None
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows
