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

    # -- links --------------------------------------------------------------------------------
    def upsert_links(self, links: Sequence[Link]) -> None:
        with self.atomic():
            for link in links:
                self._rows(
                    """INSERT INTO links VALUES (%s, %s, %s, %s, %s, %s, %s)
                       ON CONFLICT (source_id, target_id) DO UPDATE SET weight = excluded.weight,
                       reason = excluded.reason, updated_at = excluded.updated_at,
                       llm_call_id = excluded.llm_call_id""",
                    (
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
        with self.atomic():
            for source, target in pairs:
                self._rows("DELETE FROM links WHERE source_id = %s AND target_id = %s", (source, target))

    def links_for(self, ids: Sequence[str]) -> list[Link]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        rows = self._rows(
            "SELECT * FROM links WHERE source_id = ANY(%s) OR target_id = ANY(%s)", (wanted, wanted)
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
            f"INSERT INTO versions ({VERSION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
            (
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
        rows = self._rows(
            f"SELECT {VERSION_COLUMNS} FROM versions WHERE note_id = %s ORDER BY version", (note_id,)
        )
        return [row_version(r) for r in rows]

    def versions_in_batch(self, batch: str) -> list[NoteVersion]:
        rows = self._rows(
            f"SELECT {VERSION_COLUMNS} FROM versions WHERE batch = %s ORDER BY created_at, seq",
            (clean_text(batch),),
        )
        return [row_version(r) for r in rows]

    def record_llm_call(self, call: LLMCall) -> None:
        with self.atomic():
            self._rows(
                """INSERT INTO llm_calls (id, step, prompt_version, model, input_tokens, output_tokens,
                   latency_ms, ok, cached, error, attempts, note_ids, created_at, refused)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s::jsonb)
                   ON CONFLICT (id) DO UPDATE SET step = excluded.step,
                   prompt_version = excluded.prompt_version, model = excluded.model,
                   input_tokens = excluded.input_tokens,
                   output_tokens = excluded.output_tokens, latency_ms = excluded.latency_ms, ok = excluded.ok,
                   cached = excluded.cached, error = excluded.error, attempts = excluded.attempts,
                   note_ids = excluded.note_ids, created_at = excluded.created_at,
                   refused = excluded.refused""",
                (
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
                    "INSERT INTO llm_call_notes VALUES (%s, %s) ON CONFLICT DO NOTHING", (call.id, note_id)
                )

    def llm_calls(self, note_id: str | None = None, limit: int = 1000) -> list[LLMCall]:
        if note_id is None:
            rows = self._rows("SELECT * FROM llm_calls ORDER BY created_at LIMIT %s", (limit,))
        else:
            rows = self._rows(
                """SELECT c.* FROM llm_calls c JOIN llm_call_notes m ON m.call_id = c.id
                   WHERE m.note_id = %s ORDER BY c.created_at LIMIT %s""",
                (note_id, limit),
            )
        return [LLMCall(**r) for r in rows]

    def get_llm_calls(self, ids: Sequence[str]) -> dict[str, LLMCall]:
        rows = self._rows("SELECT * FROM llm_calls WHERE id = ANY(%s)", (list(dict.fromkeys(ids)),))
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
