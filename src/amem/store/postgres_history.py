"""PostgreSQL store, second half: links, note versions, LLM call records and the LLM cache.

Apart from ``postgres.py`` only to keep each module readable; ``PostgresStore`` inherits it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ..notes import Link, LLMCall, NoteVersion, Scope, utcnow
from . import postgres_upkeep as upkeep
from .base import Filters
from .postgres_schema import VERSION_COLUMNS, clean_text, row_version


class PostgresHistory:
    """Links, versions, LLM calls and the LLM cache over ``PostgresStore``'s connections and transactions."""

    if TYPE_CHECKING:  # provided by PostgresStore

        def atomic(self) -> AbstractContextManager[None]: ...
        def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...
        def _where(self, scope: Scope, filters: Filters | None) -> tuple[list[str], list[Any]]: ...
        def _mine(self, alias: str = "") -> tuple[str, list[Any]]: ...
        def _owners(self, ids: Sequence[str]) -> dict[str, list[str]]: ...
        def _owner(self, note_id: str) -> str: ...

        _user: str | None

    # -- links --------------------------------------------------------------------------------
    def upsert_links(self, links: Sequence[Link]) -> None:
        """A link lives with its source note's user (both ends must be that user's notes)."""
        if not links:
            return
        with self.atomic():
            owner = {i: u for u, ids in self._owners([x.source_id for x in links]).items() for i in ids}
            for link in links:
                self._rows(
                    """INSERT INTO links (user_id, source_id, target_id, weight, reason, created_at,
                       updated_at, llm_call_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                       ON CONFLICT (user_id, source_id, target_id) DO UPDATE SET weight = excluded.weight,
                       reason = excluded.reason, updated_at = excluded.updated_at,
                       llm_call_id = excluded.llm_call_id""",
                    (
                        owner.get(link.source_id, ""),
                        link.source_id,
                        link.target_id,
                        link.weight,
                        clean_text(link.reason),
                        link.created_at,
                        link.updated_at,
                        link.llm_call_id,
                    ),
                )

    def delete_links(self, pairs: Sequence[tuple[str, str]]) -> None:
        mine, user = self._mine()
        with self.atomic():
            for source, target in pairs:
                self._rows(
                    f"DELETE FROM links WHERE source_id = %s AND target_id = %s{mine}",
                    [source, target, *user],
                )

    def links_for(self, ids: Sequence[str]) -> list[Link]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        mine, user = self._mine()
        rows = self._rows(
            f"SELECT * FROM links WHERE (source_id = ANY(%s) OR target_id = ANY(%s)){mine}",
            [wanted, wanted, *user],
        )
        links = [Link(**r) for r in rows]
        return sorted(links, key=lambda link: (-link.weight, link.created_at))

    def iter_links(self, scope: Scope, batch: int = 2000) -> Iterator[Link]:
        return upkeep.iter_links(self._rows, self._where(scope, None), batch)

    # -- versions and calls -------------------------------------------------------------------
    def add_version(self, version: NoteVersion) -> None:
        snapshot = version.model_dump_json(include=NoteVersion.SNAPSHOT_FIELDS).replace(
            "\\u0000", "\\ufffd"
        )  # jsonb refuses NUL, as text does
        self._rows(
            f"INSERT INTO versions (user_id, {VERSION_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
            (
                self._owner(version.note_id),
                version.note_id,
                version.version,
                version.cause.value,
                version.created_at,
                version.llm_call_id,
                clean_text(version.detail),
                snapshot,
                clean_text(version.batch),
            ),
        )

    def versions(self, note_id: str) -> list[NoteVersion]:
        mine, user = self._mine()
        rows = self._rows(
            f"SELECT {VERSION_COLUMNS} FROM versions WHERE note_id = %s{mine} ORDER BY version",
            [note_id, *user],
        )
        return [row_version(r) for r in rows]

    def versions_in_batch(self, batch: str) -> list[NoteVersion]:
        mine, user = self._mine()
        rows = self._rows(
            f"SELECT {VERSION_COLUMNS} FROM versions WHERE batch = %s{mine} ORDER BY created_at, seq",
            [clean_text(batch), *user],
        )
        return [row_version(r) for r in rows]

    def record_llm_call(self, call: LLMCall) -> None:
        """A call lives with the user of its notes (a call without notes: the empty user's)."""
        with self.atomic():
            user = next(iter(self._owners(call.note_ids)), "") if call.note_ids else (self._user or "")
            self._rows(
                """INSERT INTO llm_calls (user_id, id, step, prompt_version, model, input_tokens,
                   output_tokens, latency_ms, ok, cached, error, attempts, note_ids, created_at, refused)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s::jsonb)
                   ON CONFLICT (user_id, id) DO UPDATE SET step = excluded.step,
                   prompt_version = excluded.prompt_version, model = excluded.model,
                   input_tokens = excluded.input_tokens,
                   output_tokens = excluded.output_tokens, latency_ms = excluded.latency_ms, ok = excluded.ok,
                   cached = excluded.cached, error = excluded.error, attempts = excluded.attempts,
                   note_ids = excluded.note_ids, created_at = excluded.created_at,
                   refused = excluded.refused""",
                (
                    user,
                    call.id,
                    call.step,
                    call.prompt_version,
                    call.model,
                    call.input_tokens,
                    call.output_tokens,
                    call.latency_ms,
                    call.ok,
                    call.cached,
                    clean_text(call.error),
                    call.attempts,
                    json.dumps(call.note_ids),
                    call.created_at,
                    clean_text(json.dumps([r.model_dump() for r in call.refused])),
                ),
            )
            for note_id in call.note_ids:
                self._rows(
                    "INSERT INTO llm_call_notes (user_id, call_id, note_id) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (user, call.id, note_id),
                )

    def llm_calls(self, note_id: str | None = None, limit: int = 1000) -> list[LLMCall]:
        if note_id is None:
            rows = self._rows("SELECT * FROM llm_calls ORDER BY created_at LIMIT %s", (limit,))
        else:
            mine, user = self._mine("m.")
            rows = self._rows(
                f"""SELECT c.* FROM llm_calls c JOIN llm_call_notes m
                   ON m.user_id = c.user_id AND m.call_id = c.id
                   WHERE m.note_id = %s{mine} ORDER BY c.created_at LIMIT %s""",
                [note_id, *user, limit],
            )
        return [LLMCall(**r) for r in rows]

    def get_llm_calls(self, ids: Sequence[str]) -> dict[str, LLMCall]:
        mine, user = self._mine()
        rows = self._rows(
            f"SELECT * FROM llm_calls WHERE id = ANY(%s){mine}", [list(dict.fromkeys(ids)), *user]
        )
        return {r["id"]: LLMCall(**r) for r in rows}

    # -- LLM cache ----------------------------------------------------------------------------
    def cache_get(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM llm_cache WHERE key = %s", (key,))
        return str(rows[0]["value"]) if rows else None

    def cache_put(self, key: str, value: str) -> None:
        self._rows(
            """INSERT INTO llm_cache VALUES (%s, %s, %s)
               ON CONFLICT (key) DO UPDATE SET value = excluded.value, created_at = excluded.created_at""",
            (key, clean_text(value), utcnow()),
        )
