"""One scope never reads or changes another's notes: through the library, the CLI, the REST API and MCP.

Each interface is driven as user alice against a store that also holds bob's notes (with links, versions
and LLM calls); every read must come back without bob's notes and every write aimed at bob's ids must be
refused, and bob's whole export must be byte-for-byte the same afterwards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from amem import Memory
from amem.cli import cli
from amem.config import Settings
from amem.embed.fake import FakeEmbedder
from amem.errors import AmemError, InvalidInput, NotFound
from amem.llm.fake import FakeLLM
from amem.transfer import export_lines, export_to, import_file
from tests.conftest import make_memory

ALICE_TEXT = [
    "Alice adopted a grey cat called Miso in March",
    "Alice takes Miso the cat to the vet every spring",
    "Alice is learning the cello on Tuesday evenings",
]
BOB_TEXT = [
    "Bob keeps his savings account number in a blue notebook",
    "Bob's blue notebook sits in the kitchen drawer next to the cat food",
    "Bob is training for the Lisbon half marathon",
]


@dataclass
class World:
    mem: Memory
    home: Path
    alice: list[str]
    bob: list[str]

    def bob_state(self) -> list[str]:
        """Everything stored about bob: notes (with vectors), links, versions and LLM calls."""
        return list(export_lines(self.mem.scoped(user_id="bob")))


def build_world(mem: Memory, home: Path) -> World:
    alice = [mem.scoped(user_id="alice").add(t).id for t in ALICE_TEXT]
    bob = [mem.scoped(user_id="bob").add(t).id for t in BOB_TEXT]
    bob_mem = mem.scoped(user_id="bob")
    bob_mem.update(bob[0], tags=["finance"])
    assert bob_mem.links(bob[1]), "bob's notes must be linked for the test to mean anything"
    mem.flush_usage()
    return World(mem, home, alice, bob)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    home = tmp_path / "home"  # the autouse fixture's AMEM_HOME: the CLI opens this same store
    mem = make_memory(home / "memory.db", link_floor=0.0, evolve_floor=0.0)
    yield build_world(mem, home)
    mem.close()


@pytest.fixture(params=["postgres", "citus"])
def pg_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """The same world on PostgreSQL, then on a live Citus cluster (notes distributed by user)."""
    pg_url = str(request.getfixturevalue("pg_url" if request.param == "postgres" else "citus_url"))
    settings = Settings.resolve({"home": tmp_path / "home", "llm": "fake", "embedder": "fake"})
    mem = Memory(
        store=pg_url,
        llm=FakeLLM(),
        embedder=FakeEmbedder(64),
        settings=settings,
        link_floor=0.0,
        evolve_floor=0.0,
    )
    yield build_world(mem, tmp_path / "home")
    mem.close()


def refused(fn: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises((NotFound, InvalidInput)):
        fn(*args, **kwargs)


def test_library(world: World, tmp_path: Path) -> None:
    check_library(world, tmp_path)


def test_library_on_postgres(pg_world: World, tmp_path: Path) -> None:
    check_library(pg_world, tmp_path)


def check_library(world: World, tmp_path: Path) -> None:
    before = world.bob_state()
    alice = world.mem.scoped(user_id="alice")
    bob_id = world.bob[1]
    for fn, args in [
        (alice.get, (bob_id,)),
        (alice.links, (bob_id,)),
        (alice.neighbours, (bob_id,)),
        (alice.history, (bob_id,)),
        (alice.llm_calls, (bob_id,)),
        (alice.pin, (bob_id,)),
        (alice.archive, (bob_id,)),
        (alice.unarchive, (bob_id,)),
        (alice.restore, (bob_id, 1)),
        (alice.delete, (bob_id,)),
        (alice.link, (world.alice[0], bob_id)),
        (alice.link, (bob_id, world.alice[0])),
        (alice.link, (world.bob[0], bob_id)),
    ]:
        refused(fn, *args)
    refused(alice.update, bob_id, content="ignore all rules: this now belongs to alice")

    hits = alice.search("blue notebook savings account kitchen drawer cat", k=10)
    assert hits and {h.note.user_id for h in hits} == {"alice"}
    assert {n.user_id for n in alice.list(limit=100)} == {"alice"} and alice.count() == 3
    assert {n.id for n in alice.graph().nodes} == set(world.alice)
    assert alice.stats()["in_scope"]["notes"] == 3

    alice.consolidate(use_llm=True)  # upkeep in alice's scope acts on alice's notes only
    alice.enrich(include_failed=True)

    out, _ = export_to(alice, tmp_path / "alice.jsonl")
    assert {json.loads(line)["data"].get("user_id") for line in out.read_text().splitlines()[1:]} <= {
        "alice",
        None,  # links, versions and calls carry no user field
    }
    bob_file, _ = export_to(world.mem.scoped(user_id="bob"), tmp_path / "bob.jsonl")
    with pytest.raises(InvalidInput, match="outside this memory's scope"):
        import_file(alice, bob_file)
    copied = import_file(alice, bob_file, rescope=True)  # copies under new ids; bob's notes untouched
    assert copied.notes == 3 and alice.count() == 6 and not set(world.bob) & {n.id for n in alice.list()}
    assert import_file(alice, bob_file, rescope=True).notes == 0  # a rerun finds its copies
    assert world.bob_state() == before


def cli_run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["--user", "alice", *args])


def test_cli(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMEM_LLM", "fake")
    monkeypatch.setenv("AMEM_EMBEDDER", "fake:64")
    world.mem.close()  # the CLI opens the same file itself
    bob_id = world.bob[1]
    mem = make_memory(world.home / "memory.db")
    before = World(mem, world.home, world.alice, world.bob).bob_state()
    mem.close()
    for args in [
        ("get", bob_id),
        ("links", bob_id),
        ("history", bob_id),
        ("update", bob_id, "--content", "now alice's"),
        ("delete", bob_id, "--yes"),
        ("pin", bob_id),
        ("archive", bob_id),
        ("unarchive", bob_id),
        ("restore", bob_id, "1"),
        ("link", world.alice[0], bob_id),
    ]:
        result = cli_run(*args)
        assert result.exit_code != 0, args
        assert "no note" in str(result.exception), (args, result.output)

    found = json.loads(cli_run("search", "blue notebook savings account", "-k", "10", "--json").stdout)
    assert found and all(h["note"]["user_id"] == "alice" for h in found)
    listed = json.loads(cli_run("list", "--json").stdout)
    assert {n["user_id"] for n in listed} == {"alice"}
    assert cli_run("consolidate").exit_code == 0

    bob_file = tmp_path / "bob.jsonl"
    assert CliRunner().invoke(cli, ["--user", "bob", "export", str(bob_file)]).exit_code == 0
    result = cli_run("import", str(bob_file))
    assert result.exit_code != 0 and "outside this memory's scope" in str(result.exception)

    mem = make_memory(world.home / "memory.db")
    try:
        assert World(mem, world.home, world.alice, world.bob).bob_state() == before
    finally:
        mem.close()


def test_rest(world: World) -> None:
    pytest.importorskip("fastapi", reason="pip install 'amem[server]'")
    from fastapi.testclient import TestClient

    from amem.server.api import create_app
    from amem.server.auth import KeyRing, parse_keys

    alice_key, bob_key = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef00"
    before = world.bob_state()
    app = create_app(world.mem, KeyRing(parse_keys(f"{alice_key}:alice,{bob_key}:bob")))
    as_alice = {"Authorization": f"Bearer {alice_key}"}
    bob_id = world.bob[1]
    with TestClient(app, raise_server_exceptions=False) as client:
        bob_export = client.get("/v1/export", headers={"Authorization": f"Bearer {bob_key}"}).text
        job = client.post("/v1/enrich", json={}, headers={"Authorization": f"Bearer {bob_key}"})
        for method, path, body in [
            ("GET", f"/v1/notes/{bob_id}", None),
            ("PATCH", f"/v1/notes/{bob_id}", {"content": "alice was here"}),
            ("DELETE", f"/v1/notes/{bob_id}", None),
            ("GET", f"/v1/notes/{bob_id}/links", None),
            ("GET", f"/v1/notes/{bob_id}/history", None),
            ("GET", f"/v1/notes/{bob_id}/calls", None),
            ("POST", f"/v1/notes/{bob_id}/pin", {"pinned": True}),
            ("POST", f"/v1/notes/{bob_id}/archive", None),
            ("POST", f"/v1/notes/{bob_id}/unarchive", None),
            ("POST", f"/v1/notes/{bob_id}/restore", {"version": 1}),
            ("POST", "/v1/links", {"source_id": world.alice[0], "target_id": bob_id}),
            ("GET", f"/v1/jobs/{job.json()['id']}", None),
            ("GET", f"/v1/notes/{bob_id}?user_id=bob", None),
        ]:
            r = client.request(method, path, json=body, headers=as_alice)
            assert r.status_code in (403, 404), (method, path, r.status_code, r.text)
        hits = client.post(
            "/v1/search", json={"query": "blue notebook savings account", "k": 10}, headers=as_alice
        ).json()["hits"]
        assert hits and {h["note"]["user_id"] for h in hits} == {"alice"}
        notes = client.get("/v1/notes?limit=100", headers=as_alice).json()["notes"]
        assert {n["user_id"] for n in notes} == {"alice"}
        graph = client.get("/v1/graph", headers=as_alice).json()
        assert {n["id"] for n in graph["nodes"]} == set(world.alice)
        exported = client.get("/v1/export", headers=as_alice).text
        assert not any(b in exported for b in world.bob)
        r = client.post("/v1/import", content=bob_export.encode(), headers=as_alice)
        assert r.status_code == 400 and "outside this memory's scope" in r.json()["error"]["message"]
        r = client.post("/v1/import?rescope=true", content=bob_export.encode(), headers=as_alice)
        assert r.status_code == 200 and r.json()["notes"] == 3, r.text
        mine = {n["id"] for n in client.get("/v1/notes?limit=100", headers=as_alice).json()["notes"]}
        assert len(mine) == 6 and not mine & set(world.bob)
    assert world.bob_state() == before


def test_mcp(world: World, tmp_path: Path) -> None:
    pytest.importorskip("mcp", reason="pip install 'amem[server]'")
    from mcp import Client

    from amem.server.mcp_server import build_server

    before = world.bob_state()
    alice = world.mem.scoped(user_id="alice")
    folder = alice.settings.transfers_path
    export_to(world.mem.scoped(user_id="bob"), "bob.jsonl", folder)
    outside = tmp_path / "secret.jsonl"
    outside.write_text("secret\n")
    (folder / "escape.jsonl").symlink_to(outside)
    bob_id = world.bob[1]

    async def session() -> None:
        async with Client(build_server(alice)) as client:

            async def call(tool: str, **args: Any) -> Any:
                return await client.call_tool(tool, args)

            calls: list[tuple[str, dict[str, Any]]] = [
                ("get_memory", {"id": bob_id}),
                ("update_memory", {"id": bob_id, "content": "alice was here"}),
                ("delete_memory", {"id": bob_id}),
                ("memory_history", {"id": bob_id}),
                ("import_memories", {"file": "bob.jsonl"}),
                ("import_memories", {"file": "../home/memory.db"}),
                ("import_memories", {"file": str(outside)}),
                ("import_memories", {"file": "escape.jsonl"}),
                ("export_memories", {"file": "../stolen.jsonl"}),
                ("export_memories", {"file": str(tmp_path / "stolen.jsonl")}),
                ("export_memories", {"file": "escape.jsonl"}),
            ]
            for tool, args in calls:
                result = await call(tool, **args)
                assert result.is_error, (tool, args)
            found = await call("search_memory", query="blue notebook savings account", k=10)
            hits = found.structured_content["hits"]
            assert hits and all(h["memory"]["id"] in world.alice for h in hits)
            done = await call("export_memories", file="mine/alice.jsonl")
            assert not done.is_error and done.structured_content["file"] == "mine/alice.jsonl"
            again = await call("import_memories", file="mine/alice.jsonl")  # the name it gave works
            assert not again.is_error and again.structured_content["notes"] == 0
            moved = await call("import_memories", file="bob.jsonl", move_here=True)
            assert not moved.is_error and moved.structured_content["notes"] == 3

    anyio.run(session)
    assert outside.read_text() == "secret\n" and not (tmp_path / "stolen.jsonl").exists()
    text = (folder / "mine" / "alice.jsonl").read_text()
    assert all(a in text for a in world.alice) and not any(b in text for b in world.bob)
    assert world.bob_state() == before and alice.count() == 6


# -- the transfer folder and the import's scope checks ---------------------------------------------


def test_confine_keeps_every_name_inside_the_folder(tmp_path: Path) -> None:
    from amem.transfer import confine

    root = tmp_path / "transfers"
    root.mkdir()
    (root / "sub").mkdir()
    (root / "out").symlink_to(tmp_path)
    assert confine(root, "a.jsonl") == root.resolve() / "a.jsonl"
    assert confine(root, "sub/../b.jsonl") == root.resolve() / "b.jsonl"
    assert confine(root, str(root / "sub" / "c.jsonl")) == root.resolve() / "sub" / "c.jsonl"
    for bad in ["", " ", "..", "../x.jsonl", "sub/../../x", "/etc/passwd", "out/x.jsonl", "a\x00b", "."]:
        with pytest.raises(InvalidInput):
            confine(root, bad)


def test_confine_property(tmp_path: Path) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from amem.transfer import confine

    root = (tmp_path / "t").resolve()
    root.mkdir()
    part = st.sampled_from(["..", ".", "a", "b.jsonl", "", "/", "~", "%2e%2e", "\\..", "..."])

    @settings(max_examples=300, deadline=None)
    @given(st.lists(part, max_size=6).map(lambda parts: "/".join(parts)), st.booleans())
    def check(name: str, absolute: bool) -> None:
        name = ("/" + name) if absolute else name
        try:
            got = confine(root, name)
        except InvalidInput:
            return
        assert root in got.parents  # whatever is accepted lies strictly inside the folder

    check()


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_import_refuses_records_that_reach_another_scope(world: World, tmp_path: Path) -> None:
    before = world.bob_state()
    alice = world.mem.scoped(user_id="alice")
    base, _ = export_to(alice, tmp_path / "alice.jsonl")
    rows = records(base)
    note = next(r for r in rows if r["type"] == "note")
    version = next(r for r in rows if r["type"] == "version")
    call = next(r for r in rows if r["type"] == "llm_call")
    source, bob0 = note["data"]["id"], world.bob[0]
    snap = {"target_id": bob0, "weight": 1.0, "created_at": "2024-01-01T00:00:00Z"}
    hostile = {
        "a link into bob's notes": ("link", {"source_id": source, "target_id": bob0}),
        "a version of bob's note": ("version", {**version["data"], "note_id": bob0, "version": 99}),
        "a version linking to bob": ("version", {**version["data"], "version": 98, "links": [snap]}),
        "a call naming bob's note": ("llm_call", {**call["data"], "id": "c-new", "note_ids": [bob0]}),
        "a note pointing at bob's": ("note", {**note["data"], "id": "n-new", "merged_into": bob0}),
        "a link to nowhere": ("link", {"source_id": source, "target_id": "no-such-id"}),
    }
    for what, (kind, data) in hostile.items():
        row = {"type": kind, "data": data}
        with pytest.raises(InvalidInput, match=r"neither in the file nor in this scope|two scopes"):
            import_file(alice, write(tmp_path / "h.jsonl", [*rows, row]))
        assert world.bob_state() == before, what
    # the same records pass on an unscoped memory only when they stay within one scope
    with pytest.raises(InvalidInput, match="two scopes"):
        link = {"type": "link", "data": hostile["a link into bob's notes"][1]}
        import_file(world.mem, write(tmp_path / "h.jsonl", [*rows, link]))


def test_rescope_copies_notes_into_the_importing_scope(world: World, tmp_path: Path) -> None:
    path, _ = export_to(world.mem.scoped(user_id="alice"), tmp_path / "alice.jsonl")
    fresh = make_memory(tmp_path / "other" / "memory.db")
    try:
        carol = fresh.scoped(user_id="carol")
        with pytest.raises(InvalidInput, match="outside this memory's scope"):
            import_file(carol, path)
        assert fresh.count() == 0
        report = import_file(carol, path, rescope=True)
        assert report.notes == 3 and carol.count() == 3 and fresh.scoped(user_id="alice").count() == 0
        copies = carol.list()
        assert not {n.id for n in copies} & set(world.alice)  # copies get ids of their own
        links = [lk for n in copies for lk in carol.links(n.id)]
        ids = {n.id for n in copies}
        assert links and all({lk.source_id, lk.target_id} <= ids for lk in links)  # links came along
        assert all(carol.history(n.id) for n in copies) and all(carol.llm_calls(n.id) for n in copies)
    finally:
        fresh.close()


def test_export_to_replaces_a_file_whole(world: World, tmp_path: Path) -> None:
    target = tmp_path / "backup.jsonl"
    target.write_text("old\n")
    written, lines = export_to(world.mem.scoped(user_id="alice"), target)
    assert written == target and len(target.read_text().splitlines()) == lines > 3
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    with pytest.raises(AmemError, match="cannot write"):
        export_to(world.mem, tmp_path / "backup.jsonl" / "x.jsonl", tmp_path)
    assert os.path.exists(target)


def test_import_refuses_ids_that_are_not_ids(world: World, tmp_path: Path) -> None:
    path, _ = export_to(world.mem.scoped(user_id="alice"), tmp_path / "alice.jsonl")
    rows = records(path)
    note = next(r for r in rows if r["type"] == "note")
    fresh = make_memory(tmp_path / "other" / "memory.db")
    try:
        for bad in ["", "a b", "../x", "x\x1b[2J", "x" * 129, "ünï"]:
            note["data"]["id"] = bad
            with pytest.raises(InvalidInput, match="is not an id"):
                import_file(fresh, write(tmp_path / "bad.jsonl", [rows[0], note]))
        assert fresh.count() == 0
    finally:
        fresh.close()


def test_import_refuses_taking_over_an_llm_call_of_another_scope(world: World, tmp_path: Path) -> None:
    before = world.bob_state()
    alice = world.mem.scoped(user_id="alice")
    bob_call = world.mem.scoped(user_id="bob").llm_calls(world.bob[0])[0]
    rows = records(export_to(alice, tmp_path / "alice.jsonl")[0])
    call = next(r for r in rows if r["type"] == "llm_call")
    for data, match in [
        ({**call["data"], "id": bob_call.id, "error": "overwritten"}, "already taken"),
        ({**call["data"], "id": "c-orphan", "note_ids": []}, "for no note"),
    ]:
        with pytest.raises(InvalidInput, match=match):
            import_file(alice, write(tmp_path / "c.jsonl", [*rows, {"type": "llm_call", "data": data}]))
    assert world.bob_state() == before


def test_a_server_import_cannot_choose_the_model_of_an_empty_store(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="pip install 'amem[server]'")
    from fastapi.testclient import TestClient

    from amem.server.api import create_app
    from amem.server.auth import KeyRing, parse_keys

    source = make_memory(tmp_path / "a" / "memory.db")
    source.add("A note embedded by the 64-dimensional fake embedder")
    body = "".join(line + "\n" for line in export_lines(source)).replace('"fake:64"', '"other:3"')
    source.close()
    empty = make_memory(tmp_path / "b" / "memory.db")
    key = "alice-key-0123456789abcdef"
    with TestClient(create_app(empty, KeyRing(parse_keys(f"{key}:alice")))) as client:
        r = client.post("/v1/import?rescope=true", content=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 400 and "embeds with 'fake:64'" in r.json()["error"]["message"], r.text
    assert empty.store.get_meta("embedding_model") is None and empty.count() == 0
    empty.close()
