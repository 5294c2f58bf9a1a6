"""amem on a live Citus cluster (a coordinator and two workers on 127.0.0.1): the tables are distributed by
user, and what one user's memory does touches that user's shard alone.

The store contract, isolation and concurrency suites run on Citus too (their ``citus`` parameters)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from amem import Memory
from amem.config import Settings
from amem.embed.fake import FakeEmbedder
from amem.llm.fake import FakeLLM
from amem.store.postgres import PostgresStore

pytest.importorskip("psycopg", reason="pip install 'amem[postgres]'")

#: a statement that reads or writes a distributed table
DISTRIBUTED = re.compile(
    r"\b(?:FROM|JOIN|INTO|UPDATE)\s+(?:notes|links|versions|llm_calls|llm_call_notes)\b", re.I
)


def citus_memory(url: str, tmp_path: Path, **kwargs: Any) -> Memory:
    settings = Settings.resolve({"home": tmp_path, "llm": "fake", "embedder": "fake"})
    return Memory(
        store=url,
        llm=FakeLLM(),
        embedder=FakeEmbedder(64),
        settings=settings,
        link_floor=-1.0,
        evolve_floor=0.0,
        **kwargs,  # type: ignore[arg-type]
    )


def test_opening_a_citus_database_distributes_every_table_by_user(citus_url: str, tmp_path: Path) -> None:
    import psycopg

    citus_memory(citus_url, tmp_path).close()
    memory = citus_memory(citus_url, tmp_path)  # opening again changes nothing
    memory.scoped(user_id="alice").add("Alice keeps bees.")
    stats = memory.stats()
    assert stats["notes"] == 1 and stats["bytes"] > 1_000_000  # the shards' sizes, not the shells'
    memory.close()
    with psycopg.connect(citus_url) as conn:
        rows = conn.execute(
            """SELECT c.relname, p.partmethod, column_to_column_name(p.logicalrelid, p.partkey),
                      p.colocationid
               FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
               WHERE c.relnamespace = 'amem'::regnamespace ORDER BY 1"""
        ).fetchall()
        shards = conn.execute(
            "SELECT count(DISTINCT nodeport) FROM citus_shards WHERE table_name = 'amem.notes'::regclass"
        ).fetchone()
    table = {name: (method, column, group) for name, method, column, group in rows}
    by_user = ["links", "llm_call_notes", "llm_calls", "notes", "versions"]
    assert {name: table[name][:2] for name in by_user} == dict.fromkeys(by_user, ("h", "user_id"))
    assert len({table[name][2] for name in by_user}) == 1  # one co-location group
    assert table["llm_cache"][:2] == ("h", "key") and table["llm_cache"][2] != table["notes"][2]
    assert table["meta"][0] == "n" and table["schema_migrations"][0] == "n"  # reference tables
    assert shards == (2,)  # notes are spread over both workers


def test_every_statement_of_one_users_memory_runs_on_one_shard(
    citus_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Add (with links, evolution, versions, an LLM call record), search (with links and usage
    counters), get, links and history for one user: EXPLAIN of every statement they ran on a distributed
    table shows a router plan (one task)."""
    import psycopg

    memory = citus_memory(citus_url, tmp_path)
    bob = memory.scoped(user_id="bob")
    for text in ("Bob keeps bees in the garden.", "Bob's bees made honey in June."):
        bob.add(text)
    alice = memory.scoped(user_id="alice")
    alice.add("Alice signed up for the Berlin marathon in September.")
    ran: list[tuple[str, list[Any]]] = []
    fetch = PostgresStore._fetch

    def spy(conn: Any, sql: str, params: Any) -> list[dict[str, Any]]:
        ran.append((sql, list(params)))
        return fetch(conn, sql, params)

    monkeypatch.setattr(PostgresStore, "_fetch", staticmethod(spy))
    note = alice.add("Alice twisted her ankle; the Berlin marathon is at risk.")
    assert alice.links(note.id)  # linked to her first note (never to bob's)
    hits = alice.search("Berlin marathon ankle", k=2)
    assert {h.note.user_id for h in hits} == {"alice"}
    alice.get(note.id)
    alice.history(note.id)
    alice.flush_usage()
    monkeypatch.undo()
    memory.close()

    checked = 0
    with psycopg.connect(citus_url, options="-c search_path=amem,public") as conn:
        cur = psycopg.ClientCursor(conn)
        for sql, params in ran:
            if not DISTRIBUTED.search(sql):
                continue
            cur.execute(f"EXPLAIN {sql}", params)
            plan = "\n".join(r[0] for r in cur.fetchall())
            tasks = [int(n) for n in re.findall(r"Task Count: (\d+)", plan)]
            assert tasks and set(tasks) == {1}, f"{sql}\n{plan}"
            checked += 1
        conn.rollback()
    assert checked >= 15  # what add, search, get, links and history ran, every one of them checked


def test_an_existing_postgresql_memory_is_distributed_when_citus_arrives(
    citus_cluster: Any, tmp_path: Path
) -> None:
    """A memory written on the coordinator before Citus was enabled there: enabling Citus and opening the
    memory again distributes its tables with everything in them, and it reads and writes as before."""
    import psycopg

    name = "amem_later_" + uuid.uuid4().hex[:8]
    for port in citus_cluster.ports:
        with psycopg.connect(citus_cluster.url(port), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    url = citus_cluster.url(citus_cluster.coordinator, name)
    try:
        memory = citus_memory(url, tmp_path)
        alice = memory.scoped(user_id="alice")
        first = alice.add("Alice signed up for the Berlin marathon in September.")
        second = alice.add("Alice twisted her ankle before the Berlin marathon.")
        memory.scoped(user_id="bob").add("Bob keeps bees.")
        memory.close()
        citus_cluster.setup_database(name, create=False)
        memory = citus_memory(url, tmp_path)
        with psycopg.connect(url) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::regclass::text LIKE 'amem.%'"
            ).fetchone()
        assert tables == (8,)
        alice = memory.scoped(user_id="alice")
        assert [lk.target_id for lk in alice.links(second.id)] == [first.id]
        assert [h.note.id for h in alice.search("ankle marathon", k=1, expand=False)] == [second.id]
        third = alice.add("Alice ran the Berlin marathon after all.")
        assert alice.get(third.id).user_id == "alice" and memory.count() == 4
        memory.close()
    finally:
        citus_cluster.drop_database(name)
