"""PostgreSQL + pgvector store: the same contract as SQLite, for many processes and machines.

Dense search is an HNSW index (cosine) with iterative scans, so scope and metadata filters pushed into SQL
still return k rows; keyword search is a ``tsvector`` GIN index ranked BM25-style (idf per term, the same
common-term rule as SQLite). Writes inside ``atomic()`` share one pooled connection and one transaction;
notes read inside it are locked (``FOR UPDATE``), so two processes evolving the same neighbour take turns
instead of overwriting each other. psycopg is imported lazily (the ``postgres`` extra).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

import numpy as np

from ..embed.base import Vectors
from ..errors import StoreError, StoreUnavailable
from ..notes import Note, Scope
from . import postgres_citus as citus
from . import postgres_upkeep as upkeep
from .base import Filters, scope_clauses
from .postgres_history import PostgresHistory
from .postgres_keyword import KeywordSearch
from .postgres_schema import (
    LOCK_KEY,
    MIGRATIONS,
    NOTE_COLUMNS,
    READ_COLUMNS,
    SCHEMA,
    USAGE_COLUMNS,
    migrate_schema,
    note_params,
    parse_vector,
    redact,
    row_note,
    vector_literal,
)
from .sqlite import COMMON_TERM_SHARE

log = logging.getLogger("amem")
_INSTALL_HINT = "install the PostgreSQL driver with `pip install 'amem[postgres]'`"
#: a load of at least this many notes (and at least the table's size) builds the HNSW index at its end
BULK_MIN = 50_000
#: the advisory lock held by the one bulk load that may run at a time
BULK_KEY = "amem:bulk"
#: seconds a distributed table's note count (for keyword statistics without a user) is reused
TOTAL_TTL_S = 60.0
#: note owners remembered by one process (about 100 bytes each)
OWNERS_KEPT = 200_000
HNSW_INDEX = "CREATE INDEX IF NOT EXISTS notes_embedding ON notes USING hnsw (embedding vector_cosine_ops)"


class PostgresStore(PostgresHistory):
    def __init__(self, url: str, pool_size: int = 4, index_memory: str = "1GB") -> None:
        try:
            import psycopg
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool, PoolTimeout
        except ImportError as exc:
            raise StoreError(f"the PostgreSQL store needs psycopg; {_INSTALL_HINT}") from exc
        self.url = redact(url)
        self._dsn = url
        self.index_memory = index_memory
        self._deferred = False  # a bulk load of this process builds the HNSW index at its end
        self._psycopg = psycopg
        self._pool_timeout = PoolTimeout
        self._local = threading.local()
        self.common_term_share = COMMON_TERM_SHARE
        self._dims: list[str] = []  # the vector size once committed (shared by views: a list, not copied)
        #: notes this process added since its last ANALYZE, and the table's size then (shared by views)
        self._counts: dict[str, float] = {"inserted": 0, "analysed_at": 0}
        self._user: str | None = None  # a view bound to one user (``bound``): id statements name the user
        #: whose each note is, as this process saw it written or read (a note never changes user), so a
        #: statement by id names the user without asking every shard first; shared by views
        self._owner_of: dict[str, str] = {}
        self._keyword = KeywordSearch(self._rows)
        # SET LOCAL reaches Citus workers only when asked to; plain PostgreSQL keeps it as a placeholder
        options = self._options = (
            f"-c search_path={SCHEMA},public -c timezone=UTC -c citus.propagate_set_commands=local"
        )
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                migrate_schema(conn, self.url, MIGRATIONS)
                self.distributed = citus.prepare(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open PostgreSQL database {self.url}: {exc}") from exc
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            open=True,
            kwargs={"autocommit": True, "row_factory": dict_row, "options": options},
            timeout=30,
            check=ConnectionPool.check_connection,  # a server restart costs no failed call
        )
        self._ensure_index()

    # -- plumbing -----------------------------------------------------------------------------
    def close(self) -> None:
        self._pool.close()

    def bound(self, user_id: str) -> PostgresStore:
        """This store seen by one user: statements by note id name the user too, so on Citus each one
        goes to that user's shard alone. Shares the connections, transactions and caches."""
        view = copy.copy(self)
        view._user = user_id
        return view

    def _mine(self, alias: str = "") -> tuple[str, list[Any]]:
        """`` AND <alias>user_id = %s`` for a bound view, nothing otherwise."""
        return (f" AND {alias}user_id = %s", [self._user]) if self._user is not None else ("", [])

    def _owners(self, ids: Sequence[str]) -> dict[str, list[str]]:
        """The ids by the user whose they are (a bound view: its user; else what this process has seen,
        and one query for the rest). Ids of no note are left out."""
        if self._user is not None:
            return {self._user: list(ids)}
        known = self._owner_of
        unknown = [i for i in ids if i not in known]
        if unknown:
            rows = self._rows("SELECT user_id, id FROM notes WHERE id = ANY(%s)", (unknown,))
            self._remember({r["id"]: r["user_id"] for r in rows})
        found: dict[str, list[str]] = {}
        for note_id in ids:
            if note_id in known:
                found.setdefault(known[note_id], []).append(note_id)
        return found

    def _remember(self, owners: dict[str, str]) -> None:
        if len(self._owner_of) + len(owners) > OWNERS_KEPT:
            self._owner_of.clear()  # a cache: what is forgotten is asked again
        self._owner_of.update(owners)

    def _owner(self, note_id: str) -> str:
        """The user of one note ('' when it is gone)."""
        return next(iter(self._owners([note_id])), "")

    @contextmanager
    def atomic(self) -> Iterator[None]:
        local = self._local
        if getattr(local, "conn", None) is not None:
            yield  # nested: the outer transaction commits or rolls back everything
            return
        try:
            with self._pool.connection() as conn:
                local.conn = conn
                try:
                    with conn.transaction():
                        yield
                finally:
                    local.conn = None
                    local.dims = None
                    local.hash_locks = set()  # advisory locks end with the transaction
        except self._psycopg.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: Exception) -> StoreError:
        if isinstance(exc, self._psycopg.OperationalError | self._pool_timeout):
            return StoreUnavailable(f"PostgreSQL at {self.url} is unavailable ({exc}); retry when it is back")
        return StoreError(f"PostgreSQL error: {exc}")

    def _in_transaction(self) -> bool:
        return getattr(self._local, "conn", None) is not None

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                return self._fetch(conn, sql, params)
            with self._pool.connection() as conn:
                return self._fetch(conn, sql, params)
        except self._psycopg.Error as exc:
            raise self._error(exc) from exc

    @staticmethod
    def _fetch(conn: Any, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        cur = conn.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []

    # -- meta ---------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = %s", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._rows(
            "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- notes --------------------------------------------------------------------------------
    def _dimensions(self) -> str | None:
        """The vector size, remembered once committed (it never changes afterwards)."""
        if self._dims:
            return self._dims[0]
        if self._in_transaction() and getattr(self._local, "dims", None) is not None:
            return str(self._local.dims)
        dims = self.get_meta("dimensions")
        if not self._in_transaction():  # inside one, the value may still be rolled back
            self._dims[:] = [dims] if dims is not None else []
        else:
            self._local.dims = dims  # for the rest of this transaction
        return dims

    def _check_dims(self, vector: Vectors) -> None:
        dims = self._dimensions()
        if dims is None:
            # the first vector fixes the column's size, which the HNSW index needs; once, under the lock
            self._rows("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (LOCK_KEY,))
            dims = self.get_meta("dimensions")
            if dims is None:
                n = int(vector.shape[0])
                self._rows(f"ALTER TABLE notes ALTER COLUMN embedding TYPE vector({n})")
                if not self._deferred:
                    self._rows(HNSW_INDEX)
                self.set_meta("dimensions", str(n))
                return
        if int(dims) != vector.shape[0]:
            raise StoreError(
                f"vector has {vector.shape[0]} dimensions but this memory holds {dims}-dimensional ones; "
                "use the embedder the memory was built with"
            )

    @contextmanager
    def bulk(self, expected: int) -> Iterator[None]:
        """A load that at least doubles a table of 50,000+ notes inserts without the HNSW index and builds
        it at the end: pgvector builds a graph from all rows in minutes, while keeping it up row by row
        takes hours at 10^6 (BENCHMARKS.md). Searches meanwhile scan exactly (slower, never wrong). One
        bulk load at a time (an advisory lock); others insert normally. If the process dies mid-load, the
        next open builds the index."""
        if expected < BULK_MIN or self._in_transaction() or self._total() > expected:
            yield  # inside a caller's transaction the rows it wrote would block the index build forever
            return
        try:
            lock = self._psycopg.connect(
                self._dsn, autocommit=True, options=self._options, connect_timeout=10
            )
        except self._psycopg.Error as exc:
            raise self._error(exc) from exc
        with lock:
            if not self._try_bulk_lock(lock):
                yield
                return
            lock.execute("DROP INDEX IF EXISTS notes_embedding")
            self._deferred = True
            try:
                yield
            finally:
                self._deferred = False
                try:
                    self._build_index(lock)
                    lock.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (BULK_KEY,))
                except self._psycopg.Error as exc:  # the next open builds it
                    raise self._error(exc) from exc

    def _build_index(self, conn: Any) -> None:
        if self.get_meta("dimensions") is None:
            return  # no vector yet: the first insert creates the index
        if not re.fullmatch(r"\d+\s*(?:[kMGT]B)?", self.index_memory):
            raise StoreError(f"index_memory {self.index_memory!r}: give a size such as 1GB or 512MB")
        with conn.transaction():  # SET LOCAL: Citus passes it on to the workers that build the shards
            conn.execute(f"SET LOCAL maintenance_work_mem = '{self.index_memory}'")
            if self.distributed:
                # a parallel HNSW build takes up to maintenance_work_mem of shared memory: one shard at a
                # time per worker keeps each worker within index_memory (many at once ran out of memory)
                conn.execute("SET LOCAL citus.max_adaptive_executor_pool_size = 1")
            conn.execute(HNSW_INDEX)
        self._analyse(conn.execute)

    @staticmethod
    def _try_bulk_lock(conn: Any) -> bool:
        got = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (BULK_KEY,)).fetchone()
        return bool(got and got[0])

    def _ensure_index(self) -> None:
        """After a bulk load that did not finish, build the missing HNSW index (unless a load is running,
        or this role may not: then searches stay exact and the owner's next open builds it)."""
        if self.get_meta("dimensions") is None or self._rows(
            "SELECT 1 FROM pg_indexes WHERE schemaname = %s AND indexname = 'notes_embedding'", (SCHEMA,)
        ):
            return
        try:
            with self._psycopg.connect(self._dsn, autocommit=True, options=self._options) as conn:
                if self._try_bulk_lock(conn):
                    self._build_index(conn)
        except self._psycopg.errors.InsufficientPrivilege:
            log.warning(
                "the HNSW index of %s is missing and this role cannot build it; ask its owner", self.url
            )
        except self._psycopg.Error as exc:
            raise self._error(exc) from exc

    def insert_note(self, note: Note, vector: Vectors) -> None:
        vec = np.asarray(vector, dtype=np.float32)
        with self.atomic():
            self._check_dims(vec)
            params = [*note_params(note), note.retrievals, note.last_retrieved_at]
            marks = ", ".join(["%s"] * len(params))
            self._rows(
                f"INSERT INTO notes ({NOTE_COLUMNS}, {USAGE_COLUMNS}, embedding) "
                f"VALUES ({marks}, %s::vector)",
                [*params, vector_literal(vec)],
            )
        self._counts["inserted"] += 1
        self._remember({note.id: note.user_id or ""})

    def update_note(self, note: Note, vector: Vectors | None = None) -> None:
        with self.atomic():
            # a note keeps its user (the distribution key, which Citus never rewrites in place)
            columns = [c.strip() for c in NOTE_COLUMNS.split(",")]
            kept = [i for i, c in enumerate(columns) if c not in ("id", "user_id")]
            params = note_params(note)
            sets = ", ".join(f"{columns[i]} = %s" for i in kept)
            extra = ""
            values = [params[i] for i in kept]
            if vector is not None:
                vec = np.asarray(vector, dtype=np.float32)
                self._check_dims(vec)
                extra = ", embedding = %s::vector"
                values = [*values, vector_literal(vec)]
            rows = self._rows(
                f"UPDATE notes SET {sets}{extra} WHERE user_id = %s AND id = %s RETURNING id",
                [*values, note.user_id or "", note.id],
            )
            if not rows:
                raise StoreError(f"note {note.id} vanished during the update; nothing was changed")

    def delete_note(self, note_id: str) -> None:
        with self.atomic():
            user = self._owner(note_id)
            # the note's lock first: a writer evolving it finishes, or waits and then finds it gone
            self._rows("SELECT id FROM notes WHERE user_id = %s AND id = %s FOR UPDATE", (user, note_id))
            self._rows("DELETE FROM versions WHERE user_id = %s AND note_id = %s", (user, note_id))
            # links go by ON DELETE CASCADE
            self._rows("DELETE FROM notes WHERE user_id = %s AND id = %s", (user, note_id))

    def get_note(self, note_id: str) -> Note | None:
        return self.get_notes([note_id]).get(note_id)

    def get_notes(self, ids: Sequence[str]) -> dict[str, Note]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        if self._in_transaction():
            # inside a write transaction, what is read is locked until commit (read-check-write is safe);
            # Citus locks rows only in a statement that stays on one shard: one per user
            owners: dict[str | None, list[str]] = {self._user: wanted}
            if self.distributed:
                owners = {owner: some for owner, some in self._owners(wanted).items()}
            rows = []
            for owner, some in sorted(owners.items(), key=lambda kv: kv[0] or ""):
                mine = " AND user_id = %s" if owner is not None else ""
                rows += self._rows(
                    f"SELECT {READ_COLUMNS} FROM notes WHERE id = ANY(%s){mine} ORDER BY id FOR UPDATE",
                    [some, *([owner] if owner is not None else [])],
                )
        else:
            mine, user = self._mine()
            rows = self._rows(f"SELECT {READ_COLUMNS} FROM notes WHERE id = ANY(%s){mine}", [wanted, *user])
        self._remember({r["id"]: r["user_id"] for r in rows})
        return {r["id"]: row_note(r) for r in rows}

    def get_vectors(self, ids: Sequence[str]) -> dict[str, Vectors]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        mine, user = self._mine()
        rows = self._rows(
            f"SELECT id, embedding::text AS e FROM notes WHERE id = ANY(%s){mine}", [wanted, *user]
        )
        return {r["id"]: parse_vector(r["e"]) for r in rows}

    def _where(self, scope: Scope, filters: Filters | None) -> tuple[list[str], list[Any]]:
        from psycopg.types.json import Jsonb

        clauses, params = scope_clauses(scope, "%s", no_user="")
        if filters is not None:
            for key, wanted in filters.metadata.items():
                if wanted is None:
                    clauses.append("coalesce(n.metadata -> %s, 'null'::jsonb) = 'null'::jsonb")
                    params.append(key)
                elif isinstance(wanted, bool) or wanted in (0, 1):
                    # as SQLite's json_extract: true and 1 match each other, false and 0
                    clauses.append("n.metadata -> %s IN (%s, %s)")
                    params.extend([key, Jsonb(bool(wanted)), Jsonb(int(wanted))])
                else:
                    clauses.append("n.metadata -> %s = %s")
                    params.extend([key, Jsonb(wanted)])
            if filters.event_after is not None:
                clauses.append("n.event_time >= %s")
                params.append(filters.event_after)
            if filters.event_before is not None:
                clauses.append("n.event_time < %s")
                params.append(filters.event_before)
            if filters.ingested_before is not None:
                clauses.append("n.ingest_time < %s")
                params.append(filters.ingested_before)
            if filters.expires_by is not None:
                clauses.append("n.expires_at <= %s")
                params.append(filters.expires_by)
            if filters.states:
                clauses.append("n.state = ANY(%s)")
                params.append([s.value for s in filters.states])
            if filters.statuses:
                clauses.append("n.status = ANY(%s)")
                params.append([s.value for s in filters.statuses])
        return clauses, params

    @staticmethod
    def _sql_where(clauses: list[str]) -> str:
        return (" WHERE " + " AND ".join(clauses)) if clauses else ""

    def list_notes(
        self, scope: Scope, filters: Filters | None = None, limit: int = 100, offset: int = 0
    ) -> list[Note]:
        clauses, params = self._where(scope, filters)
        rows = self._rows(
            f"SELECT {READ_COLUMNS} FROM notes n{self._sql_where(clauses)} "
            "ORDER BY n.ingest_time DESC, n.rid DESC LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        return [row_note(r) for r in rows]

    def count_notes(self, scope: Scope, filters: Filters | None = None) -> int:
        clauses, params = self._where(scope, filters)
        return int(self._rows(f"SELECT count(*) AS c FROM notes n{self._sql_where(clauses)}", params)[0]["c"])

    def iter_notes(self, scope: Scope, batch: int = 500, filters: Filters | None = None) -> Iterator[Note]:
        clauses, params = self._where(scope, filters)
        last = 0
        while True:
            where = self._sql_where([*clauses, "n.rid > %s"])
            rows = self._rows(
                f"SELECT rid, {READ_COLUMNS} FROM notes n{where} ORDER BY n.rid LIMIT %s",
                [*params, last, batch],
            )
            if not rows:
                return
            for row in rows:
                yield row_note(row)
            last = rows[-1]["rid"]

    def find_by_hash(self, scope: Scope, content_hash: str) -> list[str]:
        clauses, params = self._where(scope, None)
        where = self._sql_where([*clauses, "n.content_hash = %s"])
        return [r["id"] for r in self._rows(f"SELECT n.id FROM notes n{where}", [*params, content_hash])]

    def tag_counts(self, scope: Scope, filters: Filters | None = None) -> tuple[int, dict[str, int]]:
        clauses, params = self._where(scope, filters)
        where = self._sql_where(clauses)
        total = self.count_notes(scope, filters)
        rows = self._rows(
            f"SELECT t AS tag, count(*) AS n FROM notes n, jsonb_array_elements_text(n.tags) t{where} "
            "GROUP BY t",
            params,
        )
        return total, {str(r["tag"]): int(r["n"]) for r in rows}

    def find_by_hashes(self, scope: Scope, hashes: Sequence[str]) -> dict[str, list[str]]:
        clauses, params = self._where(scope, None)
        where = self._sql_where([*clauses, "n.content_hash = ANY(%s)"])
        out: dict[str, list[str]] = {}
        for start in range(0, len(hashes), 1000):
            chunk = list(dict.fromkeys(hashes[start : start + 1000]))
            for r in self._rows(f"SELECT n.content_hash, n.id FROM notes n{where}", [*params, chunk]):
                out.setdefault(r["content_hash"], []).append(r["id"])
        return out

    def lock_hashes(self, scope: Scope, hashes: Sequence[str]) -> None:
        """Transaction-scoped advisory locks on (exact scope, hash), in sorted order, in one statement
        (a function scan runs in array order); keys this transaction holds already cost no round trip."""
        if not self._in_transaction():
            raise StoreError("lock_hashes needs a transaction: call it inside atomic()")
        held: set[str] | None = getattr(self._local, "hash_locks", None)
        if held is None:
            held = self._local.hash_locks = set()
        fields = (scope.user_id, scope.agent_id, scope.run_id)
        keys = sorted({json.dumps(["amem:hash", *fields, h]) for h in hashes} - held)
        if keys:
            self._rows(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(%s::text[]) k", [keys]
            )
            held.update(keys)

    # -- search -------------------------------------------------------------------------------
    def _fresh_statistics(self) -> None:
        """ANALYZE after this process added many notes: with stale statistics (a bulk load that autovacuum
        has not seen yet) the planner estimates a scope at a few rows and sorts every vector instead of
        using the HNSW index (dense p50 33 ms instead of 2 ms at 10^4 notes in `amem bench scale`)."""
        if self._counts["inserted"] >= max(1000, self._counts["analysed_at"] // 5):
            self._analyse(lambda sql: self._rows(sql))

    def _analyse(self, run: Callable[[str], object]) -> None:
        """ANALYZE, and merge the GIN pending list (until then every keyword search scans it)."""
        run("ANALYZE notes")
        with suppress(StoreError, self._psycopg.Error):  # the owner only may; else autovacuum will
            run("SELECT gin_clean_pending_list('notes_tsv'::regclass)")
        self._keyword.forget_statistics()
        self._counts["analysed_at"] = self._total()
        self._counts["inserted"] = 0

    def nearest(
        self,
        vector: Vectors,
        k: int,
        scope: Scope,
        filters: Filters | None = None,
        exclude: Sequence[str] = (),
    ) -> list[tuple[str, float]]:
        self._fresh_statistics()
        dims = self._dimensions()
        if dims is None or k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32)
        if query.shape[0] != int(dims):
            raise StoreError(f"query vector has {query.shape[0]} dimensions, memory holds {dims}")
        clauses, params = self._where(scope, filters)
        if exclude:
            clauses.append("NOT (n.id = ANY(%s))")
            params.append(list(exclude))
        literal = vector_literal(query)
        sql = f"""WITH r AS MATERIALIZED (
                    SELECT n.id, n.embedding <=> %s::vector AS d FROM notes n{self._sql_where(clauses)}
                    ORDER BY n.embedding <=> %s::vector LIMIT %s)
                SELECT id, d FROM r ORDER BY d, id"""
        with self.atomic():  # the settings below last for this transaction only (on every Citus node)
            self._rows(f"SET LOCAL hnsw.ef_search = {min(1000, max(40, 2 * int(k)))}")
            self._rows("SET LOCAL hnsw.iterative_scan = relaxed_order")
            rows = self._rows(sql, [literal, *params, literal, k])
            if len(rows) < k:
                # the graph walk gives up after hnsw.max_scan_tuples under a selective filter: an exact
                # scan of the filtered notes finds every one (and costs little, as there are few)
                self._rows("SET LOCAL enable_indexscan = off")
                rows = self._rows(sql, [literal, *params, literal, k])
        return [(r["id"], 1.0 - float(r["d"])) for r in rows]

    def _total(self) -> int:
        """Notes the keyword statistics count over: the bound user's (so one tenant's document
        frequencies never come from another's notes), else the table's."""
        if self._user is not None:
            return int(
                self._rows("SELECT count(*) AS n FROM notes WHERE user_id = %s", (self._user,))[0]["n"]
            )
        if self.distributed:
            # the coordinator's statistics do not describe the shards: count every shard, once a minute
            at, n = self._counts.get("total_at", -1e9), self._counts.get("total", 0)
            if time.monotonic() - at > TOTAL_TTL_S:
                n = int(self._rows("SELECT count(*) AS n FROM notes")[0]["n"])
                self._counts["total"], self._counts["total_at"] = n, time.monotonic()
            return int(n)
        estimate = self._rows("SELECT reltuples::bigint AS n FROM pg_class WHERE oid = 'notes'::regclass")
        n = int(estimate[0]["n"]) if estimate else -1
        if n < 10_000:  # small, or never analysed: count exactly
            n = int(self._rows("SELECT count(*) AS n FROM notes")[0]["n"])
        return n

    def keyword(
        self, query: str, k: int, scope: Scope, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        self._fresh_statistics()
        total = None if self._user is not None else self._total()  # a user's: counted with the terms
        return self._keyword.search(
            query, k, total, self.common_term_share, self._where(scope, filters), self._user
        )

    # -- upkeep -------------------------------------------------------------------------------
    def record_retrievals(self, counts: dict[str, int], at: datetime) -> None:
        if not counts:
            return
        with self.atomic():
            owners = self._owners(sorted(counts)) if self.distributed or self._user else {None: list(counts)}
            for user, ids in sorted(owners.items(), key=lambda kv: kv[0] or ""):
                upkeep.record_retrievals(self._rows, {i: counts[i] for i in ids}, at, user)

    def duplicate_groups(self, scope: Scope) -> list[list[str]]:
        return upkeep.duplicate_groups(self._rows, self._where(scope, None))

    def similar_pairs(
        self, scope: Scope, threshold: float, since: datetime | None = None, limit: int = 10_000
    ) -> list[tuple[str, str, float]]:
        """Approximate (the HNSW index's nearest neighbours of each note): see ``upkeep.similar_pairs``."""
        if self._dimensions() is None or limit <= 0:
            return []
        with self.atomic():  # the HNSW settings last for this transaction only
            return upkeep.similar_pairs(self._rows, self._where(scope, None), threshold, since, limit)

    # -- stats --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        counts = {
            table: int(self._rows(f"SELECT count(*) AS c FROM {table}")[0]["c"])
            for table in ("notes", "links", "versions", "llm_calls")
        }
        states = {
            r["state"]: int(r["c"]) for r in self._rows("SELECT state, count(*) AS c FROM notes GROUP BY 1")
        }
        # on Citus a table's size is its shards' (the coordinator holds empty shells)
        measure = "citus_total_relation_size" if self.distributed else "pg_total_relation_size"
        size = self._rows(
            f"SELECT coalesce(sum({measure}(c.oid)), 0)::bigint AS b FROM pg_class c "
            "JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = %s AND c.relkind = 'r'",
            (SCHEMA,),
        )
        return {**counts, "states": states, "bytes": int(size[0]["b"]), "url": self.url}
