"""The PostgreSQL store beyond the contract: the engine, the CLI and concurrent processes on a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from amem import Memory
from amem.cli import cli
from amem.config import Settings
from amem.embed.fake import FakeEmbedder
from amem.errors import InvalidInput
from amem.llm.fake import FakeLLM
from amem.notes import VersionCause


def pg_memory(url: str, tmp_path: Path, llm: FakeLLM, **kwargs: object) -> Memory:
    settings = Settings.resolve({"home": tmp_path, "llm": "fake", "embedder": "fake"})
    return Memory(store=url, llm=llm, embedder=FakeEmbedder(64), settings=settings, **kwargs)  # type: ignore[arg-type]


def test_engine_on_postgres_links_evolves_searches_and_survives_restart(pg_url: str, tmp_path: Path) -> None:
    llm = FakeLLM()
    memory = pg_memory(pg_url, tmp_path, llm, evolve_floor=0.0, link_floor=-1.0)
    old = memory.add("Maya: I signed up for the Berlin marathon in September.")
    llm.script = [
        {
            "keywords": ["ankle", "marathon"],
            "tags": ["injury"],
            "context": "Maya hurt her ankle before the marathon.",
            "links": [{"to": "N1", "why": "same marathon"}],
            "updates": [
                {"note": "N1", "context": "Maya signed up for the Berlin marathon; a zebracorn injury."}
            ],
        }
    ]
    new = memory.add("Maya: I twisted my ankle (zebracorn injury); no running, the marathon is at risk.")
    assert [(lk.source_id, lk.target_id) for lk in memory.links(new.id)] == [(new.id, old.id)]
    assert [v.cause for v in memory.history(old.id)] == [VersionCause.create, VersionCause.evolve]
    hit = memory.search("zebracorn signed up Berlin September", k=1, expand=False)[0]
    assert hit.note.id == old.id and hit.why.keyword_rank == 1
    expanded = memory.search("twisted ankle", k=1)
    assert [h.note.id for h in expanded] == [new.id, old.id]  # the link brought the older note in
    memory.update(new.id, tags=["health"])
    memory.close()
    again = pg_memory(pg_url, tmp_path, FakeLLM())
    assert again.get(new.id).tags == ["health"] and again.count() == 2
    again.delete(old.id)
    assert again.links(new.id) == [] and again.count() == 1
    again.close()


def test_cli_runs_unchanged_on_postgres(pg_url: str, tmp_path: Path, fake_models_env: None) -> None:
    base = ["--home", str(tmp_path / "h"), "--store", pg_url]
    runner = CliRunner()
    for text in ("Maya runs marathons in Berlin.", "Jonas moved to Lisbon for work."):
        result = runner.invoke(cli, [*base, "add", text])
        assert result.exit_code == 0, result.output
    found = runner.invoke(cli, [*base, "search", "Lisbon", "--json"])
    assert found.exit_code == 0, found.output
    assert "Lisbon" in json.loads(found.output)[0]["note"]["content"]
    stats = runner.invoke(cli, [*base, "stats", "--json"])
    data = json.loads(stats.output)
    assert data["notes"] == 2 and "postgresql://" in data["url"]


WORKER = textwrap.dedent(
    """
    import json, sys
    from amem import Memory
    from amem.config import Settings
    from amem.embed.fake import FakeEmbedder
    from amem.llm.fake import FakeLLM

    url, worker, count, home = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

    def enums(schema, key):
        found = []
        def walk(node):
            if isinstance(node, dict):
                for k, v in node.items():
                    if k == key and isinstance(v, dict) and "enum" in v:
                        found.extend(v["enum"])
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        walk(schema)
        return found

    def handler(messages, schema):
        props = (schema or {}).get("properties", {})
        out = {"keywords": ["marathon"], "tags": ["sport"], "context": "Maya trains for the marathon."}
        if "links" in props:
            out["links"] = [{"to": a, "why": "same training"} for a in enums(props["links"], "to")[:2]]
        if "updates" in props:
            targets = enums(props["updates"], "note")[:2]
            new = messages[-1].content.rsplit("NEW NOTE", 1)[1].split("] ", 1)[1].splitlines()[0]
            out["updates"] = [
                {"note": a, "context": f"Maya keeps a marathon training log by the river; then {new}"}
                for a in targets
            ]
        return out

    settings = Settings.resolve({"home": home, "llm": "fake", "embedder": "fake"})
    memory = Memory(store=url, llm=FakeLLM(handler=handler), embedder=FakeEmbedder(64), settings=settings,
                    user_id="team", evolve_floor=0.0)
    for i in range(count):
        memory.add(f"Maya marathon training log {worker}-{i}: ran {i + 3} km by the river")
    memory.close()
    """
)


def test_four_processes_sharing_neighbours_lose_nothing(pg_url: str, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    count = 12
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), pg_url, str(w), str(count), str(tmp_path / f"h{w}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    memory = pg_memory(pg_url, tmp_path, FakeLLM())
    notes = memory.store.list_notes(memory.scope, limit=1000)
    contents = [n.content for n in notes]
    assert len(contents) == 4 * count and len(set(contents)) == 4 * count  # every note exactly once
    assert all(n.state.value == "enriched" for n in notes)
    links = memory.store.links_for([n.id for n in notes])
    pairs = [(lk.source_id, lk.target_id) for lk in links]
    ids = {n.id for n in notes}
    assert len(pairs) == len(set(pairs)) and all(s in ids and t in ids for s, t in pairs)
    assert len(pairs) > 4 * count  # links were made (up to 2 per note after the first)
    evolved = 0
    for n in notes:
        chain = memory.history(n.id)
        assert [v.version for v in chain] == list(range(1, n.version + 1)), n.id  # no gap, no fork
        assert chain[-1].context == n.context
        evolved += sum(v.cause == VersionCause.evolve for v in chain)
    assert evolved > 0
    memory.close()


@pytest.mark.parametrize("bad", ["postgresql://nobody@127.0.0.1:1/none"])
def test_unreachable_server_gives_a_clear_error(bad: str, tmp_path: Path) -> None:
    from amem.errors import StoreError

    with pytest.raises(StoreError, match="cannot open PostgreSQL database"):
        pg_memory(bad, tmp_path, FakeLLM())


def _snapshot(url: str) -> dict[str, object]:
    """Everything a store holds, in comparable form."""
    from amem.notes import Scope
    from amem.store import open_store

    store = open_store(url)
    try:
        notes = sorted(store.iter_notes(Scope()), key=lambda n: n.id)
        ids = [n.id for n in notes]
        vectors = store.get_vectors(ids)
        return {
            "notes": [n.model_dump() for n in notes],
            "vectors": {i: vectors[i].tolist() for i in ids},
            "links": sorted((lk.model_dump() for lk in store.links_for(ids)), key=str),
            "versions": {i: [v.model_dump() for v in store.versions(i)] for i in ids},
            "calls": sorted((c.model_dump() for c in store.llm_calls(limit=10**6)), key=lambda c: c["id"]),
            "meta": [store.get_meta("embedding_model"), store.get_meta("dimensions")],
        }
    finally:
        store.close()


def test_migrate_round_trip_sqlite_postgres_sqlite_keeps_every_field(
    pg_url: str, tmp_path: Path, fake_models_env: None
) -> None:
    source = tmp_path / "a.db"
    llm = FakeLLM()
    memory = pg_memory(f"sqlite:///{source}", tmp_path, llm, evolve_floor=0.0, link_floor=-1.0)
    old = memory.add("Maya: I signed up for the Berlin marathon.", metadata={"session": 1, "mood": "glad"})
    llm.script = [
        {
            "keywords": ["ankle"],
            "tags": ["injury"],
            "context": "Maya hurt her ankle.",
            "links": [{"to": "N1", "why": "same marathon"}],
            "updates": [
                {"note": "N1", "context": "Maya signed up for the Berlin marathon; she twisted her ankle."}
            ],
        }
    ]
    memory.add("Maya: I twisted my ankle before the marathon.")
    memory.scoped(user_id="jonas").add("Jonas moved to Lisbon.")
    memory.close()
    assert len(pg_memory(f"sqlite:///{source}", tmp_path, FakeLLM()).history(old.id)) == 2
    runner = CliRunner()
    there = runner.invoke(cli, ["migrate", str(source), pg_url, "--json"])
    assert there.exit_code == 0, there.output
    report = json.loads(there.stdout)
    assert report["notes"] == 3 and report["destination"] == report["source"]
    back = tmp_path / "b.db"
    again = runner.invoke(cli, ["migrate", pg_url, str(back), "--json"])
    assert again.exit_code == 0, again.output
    original, via_pg, returned = _snapshot(f"sqlite:///{source}"), _snapshot(pg_url), _snapshot(str(back))
    assert via_pg == original
    assert returned == original
    # a rerun copies nothing twice
    rerun = json.loads(runner.invoke(cli, ["migrate", str(source), pg_url, "--json"]).stdout)
    assert rerun["notes"] == 0 and rerun["skipped_notes"] == 3 and rerun["destination"] == rerun["source"]
    # a note edited in the source since is brought up to date by the next run
    edited = pg_memory(f"sqlite:///{source}", tmp_path, FakeLLM())
    edited.update(old.id, tags=["edited"])
    edited.close()
    third = json.loads(runner.invoke(cli, ["migrate", str(source), pg_url, "--json"]).stdout)
    assert third["updated_notes"] == 1 and third["versions"] == 1
    assert _snapshot(pg_url) == _snapshot(f"sqlite:///{source}")


def test_migrate_refuses_a_store_built_with_another_embedder(tmp_path: Path, pg_url: str) -> None:
    from amem.migrate import migrate

    a = pg_memory(f"sqlite:///{tmp_path / 'a.db'}", tmp_path, FakeLLM())
    a.add("one note")
    a.close()
    settings = Settings.resolve({"home": tmp_path, "llm": "fake", "embedder": "fake"})
    b = Memory(store=pg_url, llm=FakeLLM(), embedder=FakeEmbedder(32), settings=settings)
    b.add("another note")
    b.close()
    with pytest.raises(InvalidInput, match=r"dimensions|embedding_model"):
        migrate(str(tmp_path / "a.db"), pg_url)


def test_processes_opening_a_fresh_database_at_once_migrate_it_once(pg_url: str, tmp_path: Path) -> None:
    script = tmp_path / "opener.py"
    script.write_text(
        "import sys\nfrom amem.store import open_store\n"
        "s = open_store(sys.argv[1])\ns.set_meta('opened_by_' + sys.argv[2], 'yes')\ns.close()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, str(script), pg_url, str(i)], stderr=subprocess.PIPE)
        for i in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    import psycopg

    with psycopg.connect(pg_url) as conn:
        versions = conn.execute("SELECT version FROM amem.schema_migrations").fetchall()
        opened = conn.execute("SELECT count(*) FROM amem.meta WHERE key LIKE 'opened_by_%'").fetchone()
    assert versions == [(1,), (2,), (3,), (4,), (5,), (6,)] and opened == (4,)


def test_nul_is_refused_from_callers_and_replaced_in_llm_output(pg_url: str, tmp_path: Path) -> None:
    # a caller's NUL (content or metadata) is refused at input, as on SQLite; an LLM's is stored as U+FFFD
    llm = FakeLLM(script=[{"keywords": ["nul"], "tags": ["t"], "context": "A note about a \x00 character."}])
    memory = pg_memory(pg_url, tmp_path, llm)
    with pytest.raises(InvalidInput, match="NUL"):
        memory.add("A note about a NUL character.", metadata={"k": "a\x00b"})
    assert memory.count() == 0
    note = memory.add("A note about a NUL character.", metadata={"k": "ab"})
    stored = memory.get(note.id)
    assert stored.context == "A note about a \ufffd character."
    assert len(memory.history(note.id)) == 1
    assert memory.search("NUL \x00 character", k=1)[0].note.id == note.id
    memory.close()


def test_filtered_dense_search_finds_k_even_when_the_graph_walk_gives_up(pg_url: str) -> None:
    import numpy as np
    import psycopg

    from amem.notes import Note, Scope
    from amem.store import Filters, open_store

    store = open_store(pg_url)
    rng = np.random.default_rng(0)
    for i in range(400):
        vec = rng.standard_normal(16).astype(np.float32)
        store.insert_note(Note(content=f"n{i}", metadata={"tag": "rare" if i % 100 == 0 else "common"}), vec)
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ANALYZE amem.notes")
        name = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(f"ALTER DATABASE {name} SET hnsw.max_scan_tuples = 50")  # walks give up early
        conn.execute(f"ALTER DATABASE {name} SET enable_seqscan = off")  # a small table still walks the graph
    store = open_store(pg_url)
    hits = store.nearest(
        rng.standard_normal(16).astype(np.float32), 4, Scope(), Filters(metadata={"tag": "rare"})
    )
    assert len(hits) == 4
    store.close()


def _has_hnsw(url: str) -> bool:
    import psycopg

    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'notes_embedding'").fetchone()
    return found is not None


def bulk_memory(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bulk_min: int) -> Memory:
    """A memory without an LLM (so add_many may bulk-load) whose bulk threshold is ``bulk_min`` notes."""
    import amem.store.postgres as pg

    monkeypatch.setattr(pg, "BULK_MIN", bulk_min)
    settings = Settings.resolve(
        {"home": tmp_path, "llm": "none", "embedder": "fake:384", "database_url": pg_url}
    )
    return Memory(settings=settings)


def test_bulk_load_builds_the_hnsw_index_at_the_end_and_stays_searchable(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amem.notes import Scope

    memory = bulk_memory(pg_url, tmp_path, monkeypatch, 100)
    seen: list[tuple[bool, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((_has_hnsw(pg_url), memory.search("note 5 about rivers", k=3, preset="paper").__len__()))

    notes = memory.add_many(
        [f"note {i} about rivers and {i % 7} boats" for i in range(300)], batch_size=100, progress=progress
    )
    assert seen[0] == (False, 3)  # mid-load: no HNSW index, yet searches answer (exactly)
    assert _has_hnsw(pg_url) and memory.count() == 300
    for n in notes[::37]:  # the index finds each note's own vector first
        vector = memory.store.get_vectors([n.id])[n.id]
        found = memory.store.nearest(vector, 5, Scope())
        assert n.id in [i for i, sim in found if sim > 0.9999]  # hash vectors can tie
    # a small load into a big table keeps the index up row by row
    memory.add_many(["one more note"])
    assert _has_hnsw(pg_url)
    memory.close()


def test_an_interrupted_bulk_load_gets_its_index_on_the_next_open(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from amem.store import open_store

    memory = pg_memory(pg_url, tmp_path, FakeLLM())
    memory.add("a note so the vector size is known")
    memory.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as a load that died before building it
        conn.execute("DROP INDEX amem.notes_embedding")
    open_store(pg_url).close()
    assert _has_hnsw(pg_url)
    # while another process holds the bulk lock, opening leaves the index to that load
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP INDEX amem.notes_embedding")
        conn.execute("SELECT pg_advisory_lock(hashtextextended('amem:bulk', 0))")
        open_store(pg_url).close()
        assert not _has_hnsw(pg_url)


def test_rest_api_and_mcp_run_unchanged_on_postgres(pg_url: str, tmp_path: Path) -> None:
    import os

    import anyio
    from fastapi.testclient import TestClient
    from mcp import ClientSession, StdioServerParameters, stdio_client

    from amem.server.api import create_app

    memory = pg_memory(pg_url, tmp_path, FakeLLM(), link_floor=0.0)
    with TestClient(create_app(memory)) as client:
        first = client.post("/v1/notes", json={"content": "Maya signed up for the Berlin marathon"}).json()
        second = client.post("/v1/notes", json={"content": "Maya will run the Berlin marathon in May"}).json()
        hits = client.post("/v1/search", json={"query": "Berlin marathon", "k": 1}).json()["hits"]
        assert hits[0]["note"]["id"] in {first["id"], second["id"]}
        graph = client.get("/v1/graph").json()
        assert len(graph["nodes"]) == 2 and graph["edges"]
        assert client.delete(f"/v1/notes/{first['id']}").status_code == 204
    memory.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEM_")}
    env |= {
        "AMEM_HOME": str(tmp_path),
        "AMEM_LLM": "fake",
        "AMEM_EMBEDDER": "fake:64",
        "AMEM_DATABASE_URL": pg_url,
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "amem", "mcp"], env=env)

    async def main() -> None:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            found = await session.call_tool("search_memory", {"query": "Berlin marathon"})
            assert not found.is_error
            assert [h["memory"]["id"] for h in found.structured_content["hits"]] == [second["id"]]  # type: ignore[index]

    anyio.run(main)


def test_bulk_inside_a_caller_transaction_keeps_the_index(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = bulk_memory(pg_url, tmp_path, monkeypatch, 10)
    memory.add("first")
    with memory.store.atomic():  # the index build would wait for this transaction forever
        memory.add_many([f"note {i}" for i in range(50)])
    assert _has_hnsw(pg_url) and memory.count() == 51
    memory.close()


def test_migration_6_puts_the_user_first_in_every_key_and_keeps_every_row(pg_url: str) -> None:
    import psycopg

    from amem.notes import Link, LLMCall, NoteVersion
    from amem.store.postgres import PostgresStore
    from tests.test_store_contract import UNDO_USER_KEYS, note, vec

    store = PostgresStore(pg_url)
    first, second, bob = note("one", user="alice"), note("two", user="alice"), note("bob's", user="bob")
    nobody = note("no user", user=None)
    for i, n in enumerate([first, second, bob, nobody]):
        store.insert_note(n, vec(i))
    store.upsert_links([Link(source_id=first.id, target_id=second.id, reason="same day")])
    store.add_version(NoteVersion.snapshot(first, VersionCause.create))
    store.add_version(NoteVersion.snapshot(nobody, VersionCause.create))
    calls = [
        LLMCall(step="construct", prompt_version="v", model="m", note_ids=[n.id]) for n in (first, nobody)
    ]
    for call in calls:
        store.record_llm_call(call)
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(UNDO_USER_KEYS)  # back to schema 5, where a link could join two users' notes
        conn.execute(
            "INSERT INTO amem.links (source_id, target_id, weight, reason, created_at, updated_at) "
            "VALUES (%s, %s, 1, 'across users', now(), now())",
            (first.id, bob.id),
        )
    store = PostgresStore(pg_url)
    try:
        assert [(lk.source_id, lk.target_id) for lk in store.links_for([first.id])] == [(first.id, second.id)]
        assert store.get_note(nobody.id).user_id is None  # type: ignore[union-attr]
        assert [v.note_id for v in store.versions(first.id)] == [first.id]
        assert [c.id for c in store.llm_calls(nobody.id)] == [calls[1].id]
        alice = store.bound("alice")
        assert set(alice.get_notes([first.id, bob.id])) == {first.id}  # a user's handle sees only theirs
        assert [c.id for c in alice.llm_calls(first.id)] == [calls[0].id]
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        users = conn.execute("SELECT id, user_id FROM amem.llm_calls ORDER BY user_id").fetchall()
        keys = conn.execute(
            "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype = 'p' AND connamespace = 'amem'::regnamespace AND conrelid::regclass::text <> "
            "'amem.schema_migrations' AND conrelid::regclass::text <> 'amem.meta' "
            "AND conrelid::regclass::text <> 'amem.llm_cache'"
        ).fetchall()
    assert users == [(calls[1].id, ""), (calls[0].id, "alice")]
    assert sorted(keys) and all(key.startswith("PRIMARY KEY (user_id") for _, key in keys), keys
