"""SQLite store, second half: links, note versions, LLM call records (and their row mappings), LLM cache.

Apart from ``sqlite.py`` only to keep each module readable; ``SQLiteStore`` inherits it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..notes import Link, LLMCall, NoteVersion, Scope, VersionCause, utcnow
from .base import Filters, chunks
from .sqlite_schema import fmt_time, parse_time

if TYPE_CHECKING:
    from .sqlite import Rows


class SQLiteHistory:
    """Links, versions, LLM calls and the LLM cache over ``SQLiteStore``'s connection plumbing."""

    if TYPE_CHECKING:  # provided by SQLiteStore

        def _exec(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...
        def _write(self, fn: Callable[[], object]) -> None: ...
        def _where(self, scope: Scope, filters: Filters | None) -> tuple[str, list[Any]]: ...

    # -- links --------------------------------------------------------------------------------
    def upsert_links(self, links: Sequence[Link]) -> None:
        def run() -> None:
            for link in links:
                self._exec(
                    """INSERT INTO links VALUES (?,?,?,?,?,?,?)
                       ON CONFLICT(source_id, target_id) DO UPDATE SET weight=excluded.weight,
                       reason=excluded.reason, updated_at=excluded.updated_at,
                       llm_call_id=excluded.llm_call_id""",
                    (
                        link.source_id,
                        link.target_id,
                        link.weight,
                        link.reason,
                        fmt_time(link.created_at),
                        fmt_time(link.updated_at),
                        link.llm_call_id,
                    ),
                )

        self._write(run)

    def delete_links(self, pairs: Sequence[tuple[str, str]]) -> None:
        def run() -> None:
            for source, target in pairs:
                self._exec("DELETE FROM links WHERE source_id = ? AND target_id = ?", (source, target))

        self._write(run)

    def links_for(self, ids: Sequence[str]) -> list[Link]:
        out: dict[tuple[str, str], Link] = {}
        for chunk in chunks(list(dict.fromkeys(ids)), 400):
            marks = ",".join("?" * len(chunk))
            rows = self._exec(
                f"SELECT * FROM links WHERE source_id IN ({marks}) OR target_id IN ({marks})", chunk + chunk
            )
            for r in rows:
                out[(r["source_id"], r["target_id"])] = _link(r)
        return sorted(out.values(), key=lambda link: (-link.weight, link.created_at))

    def iter_links(self, scope: Scope, batch: int = 2000) -> Iterator[Link]:
        where, params = self._where(scope, None)
        last = ("", "")
        while True:
            cond = "(l.source_id, l.target_id) > (?, ?)"
            rows = self._exec(
                f"""SELECT l.* FROM links l JOIN notes n ON n.id = l.source_id
                    {where + " AND " + cond if where else " WHERE " + cond}
                    ORDER BY l.source_id, l.target_id LIMIT ?""",
                [*params, *last, batch],
            ).fetchall()
            if not rows:
                return
            yield from (_link(r) for r in rows)
            last = (rows[-1]["source_id"], rows[-1]["target_id"])

    # -- versions and calls -------------------------------------------------------------------
    def add_version(self, version: NoteVersion) -> None:
        snapshot = version.model_dump_json(include=NoteVersion.SNAPSHOT_FIELDS)
        self._write(
            lambda: self._exec(
                "INSERT INTO versions VALUES (?,?,?,?,?,?,?,?)",
                (
                    version.note_id,
                    version.version,
                    version.cause.value,
                    fmt_time(version.created_at),
                    version.llm_call_id,
                    version.detail,
                    snapshot,
                    version.batch,
                ),
            )
        )

    def versions(self, note_id: str) -> list[NoteVersion]:
        rows = self._exec("SELECT * FROM versions WHERE note_id = ? ORDER BY version", (note_id,))
        return [_version(r) for r in rows]

    def versions_in_batch(self, batch: str) -> list[NoteVersion]:
        rows = self._exec("SELECT * FROM versions WHERE batch = ? ORDER BY created_at, rowid", (batch,))
        return [_version(r) for r in rows]

    def record_llm_call(self, call: LLMCall) -> None:
        def run() -> None:
            self._exec(
                "INSERT OR REPLACE INTO llm_calls VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    call.id,
                    call.step,
                    call.prompt_version,
                    call.model,
                    call.input_tokens,
                    call.output_tokens,
                    call.latency_ms,
                    int(call.ok),
                    int(call.cached),
                    call.error,
                    call.attempts,
                    json.dumps(call.note_ids),
                    fmt_time(call.created_at),
                    json.dumps([r.model_dump() for r in call.refused]),
                ),
            )
            for note_id in call.note_ids:
                self._exec("INSERT OR IGNORE INTO llm_call_notes VALUES (?, ?)", (call.id, note_id))

        self._write(run)

    def llm_calls(self, note_id: str | None = None, limit: int = 1000) -> list[LLMCall]:
        if note_id is None:
            rows = self._exec("SELECT * FROM llm_calls ORDER BY created_at LIMIT ?", (limit,))
        else:
            rows = self._exec(
                """SELECT c.* FROM llm_calls c JOIN llm_call_notes m ON m.call_id = c.id
                   WHERE m.note_id = ? ORDER BY c.created_at LIMIT ?""",
                (note_id, limit),
            )
        return [_call(r) for r in rows]

    def get_llm_calls(self, ids: Sequence[str]) -> dict[str, LLMCall]:
        out: dict[str, LLMCall] = {}
        for chunk in chunks(list(dict.fromkeys(ids)), 500):
            marks = ",".join("?" * len(chunk))
            for r in self._exec(f"SELECT * FROM llm_calls WHERE id IN ({marks})", chunk):
                out[r["id"]] = _call(r)
        return out

    # -- LLM cache ----------------------------------------------------------------------------
    def cache_get(self, key: str) -> str | None:
        row = self._exec("SELECT value FROM llm_cache WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def cache_put(self, key: str, value: str) -> None:
        self._write(
            lambda: self._exec(
                "INSERT OR REPLACE INTO llm_cache VALUES (?, ?, ?)", (key, value, fmt_time(utcnow()))
            )
        )


def _call(r: sqlite3.Row) -> LLMCall:
    return LLMCall(
        id=r["id"],
        step=r["step"],
        prompt_version=r["prompt_version"],
        model=r["model"],
        input_tokens=r["input_tokens"],
        output_tokens=r["output_tokens"],
        latency_ms=r["latency_ms"],
        ok=bool(r["ok"]),
        cached=bool(r["cached"]),
        error=r["error"],
        attempts=r["attempts"],
        note_ids=json.loads(r["note_ids"]),
        created_at=parse_time(r["created_at"]),
        refused=json.loads(r["refused"]),
    )


def _link(r: sqlite3.Row) -> Link:
    return Link(
        source_id=r["source_id"],
        target_id=r["target_id"],
        weight=r["weight"],
        reason=r["reason"],
        created_at=parse_time(r["created_at"]),
        updated_at=parse_time(r["updated_at"]),
        llm_call_id=r["llm_call_id"],
    )


def _version(r: sqlite3.Row) -> NoteVersion:
    return NoteVersion(
        note_id=r["note_id"],
        version=r["version"],
        cause=VersionCause(r["cause"]),
        created_at=parse_time(r["created_at"]),
        llm_call_id=r["llm_call_id"],
        detail=r["detail"],
        batch=r["batch"],
        **json.loads(r["snapshot"]),
    )
