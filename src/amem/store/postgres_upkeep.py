"""Upkeep queries of the PostgreSQL store: usage counters, links by scope, exact and near duplicates.

Each function takes ``rows`` (the store's statement runner, on its transaction's connection when there is
one) and the scope's SQL conditions on a notes table aliased ``n``, as ``PostgresStore._where`` builds them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from ..notes import Link, NoteStatus, Scope
from .base import scope_clauses

Rows = Callable[[str, Sequence[Any]], list[dict[str, Any]]]
Where = tuple[list[str], list[Any]]

#: neighbours each note looks at when looking for near duplicates
SIMILAR_NEIGHBOURS = 8
#: an exact scope of at most this many active notes is compared exactly (n^2 distances, 4 * 10^6 at most:
#: about a second); a larger one walks the HNSW index once per note
EXACT_SCOPE_MAX = 2000
SCOPE_KEYS = ("user_id", "agent_id", "run_id")
ACTIVE = NoteStatus.active.value


def _where(clauses: list[str]) -> str:
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def record_retrievals(rows: Rows, counts: dict[str, int], at: datetime, user: str | None = None) -> None:
    """The notes' rows are locked in id order first, as ``get_notes`` does, so two searches counting
    overlapping hits never deadlock. With ``user`` (every note is that user's), each statement stays on
    that user's shard; Citus runs one UPDATE per count value."""
    if not counts:
        return
    mine, who = (" AND user_id = %s", [user]) if user is not None else ("", [])
    ids = sorted(counts)
    rows(f"SELECT id FROM notes WHERE id = ANY(%s){mine} ORDER BY id FOR UPDATE", [ids, *who])
    by_count: dict[int, list[str]] = {}
    for note_id in ids:
        by_count.setdefault(counts[note_id], []).append(note_id)
    for n, some in sorted(by_count.items()):
        rows(
            f"UPDATE notes SET retrievals = retrievals + %s, last_retrieved_at = %s WHERE id = ANY(%s){mine}",
            [n, at, some, *who],
        )


def iter_links(rows: Rows, where: Where, batch: int) -> Iterator[Link]:
    """Links whose source note matches ``where``, a page at a time in primary-key order."""
    clauses, params = where
    last: list[str] = []
    while True:
        keyset = ["(l.source_id, l.target_id) > (%s, %s)"] if last else []
        page = rows(
            f"""SELECT l.* FROM links l JOIN notes n ON n.user_id = l.user_id AND n.id = l.source_id
                {_where([*clauses, *keyset])}
                ORDER BY l.source_id, l.target_id LIMIT %s""",
            [*params, *last, batch],
        )
        yield from (Link(**r) for r in page)
        if len(page) < batch:
            return
        last = [page[-1]["source_id"], page[-1]["target_id"]]


def duplicate_groups(rows: Rows, where: Where) -> list[list[str]]:
    """Active notes sharing a content hash within one exact scope (NULL equals NULL in GROUP BY), each
    group oldest first; the groups in the order of their oldest note."""
    clauses, params = where
    found = rows(
        f"""SELECT array_agg(n.id ORDER BY n.rid) AS ids FROM notes n{_where([*clauses, "n.status = %s"])}
            GROUP BY n.content_hash, n.user_id, n.agent_id, n.run_id HAVING count(*) > 1
            ORDER BY min(n.rid)""",
        [*params, ACTIVE],
    )
    return [list(r["ids"]) for r in found]


def similar_pairs(
    rows: Rows, where: Where, threshold: float, since: datetime | None, limit: int
) -> list[tuple[str, str, float]]:
    """(older id, newer id, cosine) for active notes of one exact scope at or above ``threshold``, best
    first. Run inside a transaction: it sets the HNSW search parameters for that transaction only.

    An approximation, unlike SQLite's exact matrix product: each note (with ``since``, each note updated
    since then) looks for its ``SIMILAR_NEIGHBOURS`` nearest active notes of its own exact scope, and a
    pair is found when one of its notes is among the other's nearest. A note with more near duplicates
    than that has the rest found when they are queried in turn (or on the next run, once the first ones
    are merged); with ``since``, a changed note finds an unchanged one only when that one is among its
    nearest. Each exact scope is queried on its own: one of up to ``EXACT_SCOPE_MAX`` notes compares its
    notes with each other exactly (cheaper than walking a graph that is mostly other scopes' notes); a
    larger one asks the HNSW index (iterative scan, so the scope filter still yields the neighbours)."""
    clauses, params = where
    stale = "bool_or(n.updated_at >= %s)" if since is not None else "true"
    scopes = rows(
        f"""SELECT n.user_id, n.agent_id, n.run_id, count(*) AS c FROM notes n
            {_where([*clauses, "n.status = %s"])}
            GROUP BY n.user_id, n.agent_id, n.run_id HAVING count(*) > 1 AND {stale}""",
        [*params, ACTIVE, *([since] if since is not None else [])],
    )
    if any(key["c"] > EXACT_SCOPE_MAX for key in scopes):
        rows(f"SET LOCAL hnsw.ef_search = {max(40, 4 * SIMILAR_NEIGHBOURS)}", ())
        rows("SET LOCAL hnsw.iterative_scan = relaxed_order", ())
    found: dict[tuple[int, int], tuple[str, str, float]] = {}
    for key in scopes:
        exact, values = scope_clauses(Scope(**{k: key[k] for k in SCOPE_KEYS}, exact=True), "%s")
        members = [*exact, "n.status = %s"]
        changed = ["n.updated_at >= %s"] if since is not None else []
        changed_params = [since] if since is not None else []
        if key["c"] <= EXACT_SCOPE_MAX:
            sql = f"""WITH g AS MATERIALIZED (
                    SELECT n.id, n.rid, n.updated_at, n.embedding FROM notes n{_where(members)})
                SELECT n.id AS a, n.rid AS a_rid, b.id AS b, b.rid AS b_rid, b.d FROM g n
                CROSS JOIN LATERAL (
                    SELECT m.id, m.rid, m.embedding <=> n.embedding AS d FROM g m WHERE m.id <> n.id
                    ORDER BY d LIMIT %s) b
                WHERE {" AND ".join([*changed, "b.d <= %s"])}"""
            sql_params = [*values, ACTIVE, SIMILAR_NEIGHBOURS, *changed_params]
        else:
            inner = [c.replace("n.", "m.", 1) for c in members]
            sql = f"""SELECT n.id AS a, n.rid AS a_rid, b.id AS b, b.rid AS b_rid, b.d FROM notes n
                CROSS JOIN LATERAL (
                    SELECT m.id, m.rid, m.embedding <=> n.embedding AS d FROM notes m
                    WHERE {" AND ".join([*inner, "m.id <> n.id"])}
                    ORDER BY m.embedding <=> n.embedding LIMIT %s) b
                {_where([*members, *changed, "b.d <= %s"])}"""
            sql_params = [*values, ACTIVE, SIMILAR_NEIGHBOURS, *values, ACTIVE, *changed_params]
        for r in rows(sql, [*sql_params, 1.0 - threshold + 1e-6]):
            sim = 1.0 - float(r["d"])
            if sim >= threshold:
                older, newer = sorted([(r["a_rid"], r["a"]), (r["b_rid"], r["b"])])
                found[(older[0], newer[0])] = (older[1], newer[1], sim)
    best = sorted(found.items(), key=lambda kv: (-kv[1][2], kv[0]))[:limit]
    return [pair for _, pair in best]
