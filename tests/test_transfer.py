"""Export/import: lossless round trip, idempotent re-import, all-or-nothing on bad input."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from amem import AmemError, InvalidInput, LLMUnavailable, Memory, VersionCause
from amem.config import Settings
from amem.embed.fake import FakeEmbedder
from amem.llm.fake import FakeLLM
from amem.transfer import FORMAT, FORMAT_VERSION, ImportReport, export_file, export_lines, import_file

pytestmark = pytest.mark.usefixtures("fake_models_env")


def make_memory(home: Path, llm: FakeLLM | None = None, dims: int = 64, **kwargs: object) -> Memory:
    settings = Settings.resolve({"home": home, "llm": "fake", "embedder": "fake"}, env={})
    return Memory(
        llm=llm or FakeLLM(),
        embedder=FakeEmbedder(dims),
        settings=settings,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Memory]:
    """A memory with every kind of record: links, evolve/update/enrich versions, failed and batch calls."""
    m = make_memory(tmp_path / "source")
    # similar notes: the fake LLM links the second to the first and evolves the first (evolve version)
    m.add("Caroline went to the LGBTQ support group yesterday", event_time=datetime(2023, 5, 8, 13, 56))
    m.add(
        "Caroline went to the LGBTQ support group again today and met a counsellor",
        metadata={"nested": {"a": [1, 2]}, "n": 3},
    )
    # one batched call for several notes
    m.add_many(
        [
            "Melanie ran a charity race for mental health",
            {
                "content": "Melanie ran another charity race — für die Gesundheit ✓",
                "metadata": {"lang": "mixed"},
            },
            "Jon opened a dance studio downtown",
        ]
    )
    # a note stored pending because the LLM was down (a failed LLM call record), then enriched later;
    # the failing LLM works on the same store through a second Memory
    down = make_memory(tmp_path / "source", llm=FakeLLM(script=[LLMUnavailable("connection refused")]))
    pending = down.add("Gina started an online clothing store")
    assert pending.state.value == "pending" and pending.last_error
    m.enrich()
    # a hand edit (update version) and a note in another scope
    m.update(pending.id, keywords=["clothing", "store"])
    m.scoped(user_id="alice").add("Alice keeps bees on her roof")
    m.scoped(user_id="alice").add("Alice keeps bees and sells honey")
    # a second note still pending (failed call), never enriched
    down.llm.script.append(LLMUnavailable("timeout"))  # type: ignore[attr-defined]
    down.add("Jon's studio needs a new floor")
    down.close()
    yield m
    m.close()


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[Memory]:
    m = make_memory(tmp_path / "dest")
    yield m
    m.close()


def write_export(memory: Memory, path: Path) -> Path:
    with path.open("w", encoding="utf-8") as out:
        export_file(memory, out)
    return path


def snapshot(memory: Memory) -> dict[str, object]:
    """Everything the store holds about the memory's notes, in comparable form."""
    store = memory.store
    notes = {n.id: n for n in store.iter_notes(memory.scope)}
    ids = sorted(notes)
    links = sorted(
        (lk.model_dump() for lk in store.links_for(ids)), key=lambda d: (d["source_id"], d["target_id"])
    )
    calls = {c.id: c.model_dump() for nid in ids for c in store.llm_calls(nid)}
    return {
        "notes": {i: notes[i].model_dump() for i in ids},
        "vectors": store.get_vectors(ids),
        "links": links,
        "versions": {i: [v.model_dump() for v in store.versions(i)] for i in ids},
        "calls": calls,
        "calls_per_note": {i: sorted(c.id for c in store.llm_calls(i)) for i in ids},
    }


# -- round trip ------------------------------------------------------------------------------------


def test_source_fixture_has_every_kind_of_record(source: Memory) -> None:
    snap = snapshot(source)
    causes = {v["cause"] for vs in snap["versions"].values() for v in vs}  # type: ignore[union-attr]
    assert {VersionCause.create, VersionCause.evolve, VersionCause.enrich, VersionCause.update} <= causes
    assert snap["links"]
    calls = snap["calls"].values()  # type: ignore[union-attr]
    assert any(not c["ok"] for c in calls)
    assert any(len(c["note_ids"]) >= 3 for c in calls)
    states = {n["state"].value for n in snap["notes"].values()}  # type: ignore[union-attr]
    assert states == {"enriched", "pending"}


def test_round_trip_is_lossless(source: Memory, dest: Memory, tmp_path: Path) -> None:
    path = write_export(source, tmp_path / "export.jsonl")
    report = import_file(dest, path)
    before, after = snapshot(source), snapshot(dest)

    assert after["notes"] == before["notes"]
    assert after["vectors"].keys() == before["vectors"].keys()  # type: ignore[union-attr]
    for note_id, vec in before["vectors"].items():  # type: ignore[union-attr]
        assert np.array_equal(after["vectors"][note_id], vec)  # type: ignore[index]
        assert after["vectors"][note_id].dtype == np.float32  # type: ignore[index]
    assert after["links"] == before["links"]
    assert after["versions"] == before["versions"]
    assert after["calls"] == before["calls"]
    assert after["calls_per_note"] == before["calls_per_note"]

    assert report == ImportReport(
        notes=len(before["notes"]),  # type: ignore[arg-type]
        links=len(before["links"]),  # type: ignore[arg-type]
        versions=sum(len(v) for v in before["versions"].values()),  # type: ignore[union-attr]
        llm_calls=len(before["calls"]),  # type: ignore[arg-type]
        skipped=0,
    )
    assert dest.store.get_meta("embedding_model") == source.store.get_meta("embedding_model") == "fake:64"
    assert dest.store.get_meta("dimensions") == "64"


def test_evolve_versions_keep_their_llm_call(source: Memory, dest: Memory, tmp_path: Path) -> None:
    import_file(dest, write_export(source, tmp_path / "export.jsonl"))
    evolved = [
        v
        for n in dest.store.iter_notes(dest.scope)
        for v in dest.store.versions(n.id)
        if v.cause == VersionCause.evolve
    ]
    assert evolved
    call_ids = {c.id for c in dest.store.llm_calls()}
    for v in evolved:
        assert v.llm_call_id in call_ids
        assert v.detail.startswith("evolved by note")


def test_imported_memory_is_searchable_and_writable(source: Memory, dest: Memory, tmp_path: Path) -> None:
    import_file(dest, write_export(source, tmp_path / "export.jsonl"))
    hits = dest.search("charity race", k=3, expand=False)
    assert hits and "charity race" in hits[0].note.content
    assert hits[0].why.keyword_rank is not None and hits[0].why.dense_rank is not None
    added = dest.add("Melanie will run a third charity race")
    assert dest.get(added.id).state.value == "enriched"


def test_export_lines_format(source: Memory) -> None:
    lines = list(export_lines(source))
    header = json.loads(lines[0])
    assert header == {
        "type": FORMAT,
        "version": FORMAT_VERSION,
        "embedding_model": "fake:64",
        "dimensions": "64",
    }
    body = [json.loads(line) for line in lines[1:]]
    kinds = [r["type"] for r in body]
    assert set(kinds) == {"note", "link", "version", "llm_call"}
    assert kinds.index("link") > max(i for i, k in enumerate(kinds) if k == "note")  # notes first
    note = next(r["data"] for r in body if r["type"] == "note")
    raw = base64.b64decode(note["embedding"])
    assert len(raw) == 64 * 4
    call_ids = [r["data"]["id"] for r in body if r["type"] == "llm_call"]
    assert len(call_ids) == len(set(call_ids))  # each call once even when it touched several notes


def test_export_file_counts_lines(source: Memory) -> None:
    out = io.StringIO()
    count = export_file(source, out)
    text = out.getvalue()
    assert text.endswith("\n")
    assert count == len(text.splitlines()) == len(list(export_lines(source)))


def test_scoped_export_holds_only_that_scope(source: Memory, tmp_path: Path) -> None:
    alice = source.scoped(user_id="alice")
    path = write_export(alice, tmp_path / "alice.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    notes = [r["data"] for r in records if r["type"] == "note"]
    assert len(notes) == 2 and {n["user_id"] for n in notes} == {"alice"}
    ids = {n["id"] for n in notes}
    for r in records:
        if r["type"] == "link":
            assert {r["data"]["source_id"], r["data"]["target_id"]} <= ids
        if r["type"] == "version":
            assert r["data"]["note_id"] in ids
    other = make_memory(tmp_path / "other")
    try:
        report = import_file(other, path)
        assert report.notes == 2
        assert other.count() == 2
        assert other.scoped(user_id="alice").count() == 2
    finally:
        other.close()


def test_empty_memory_round_trip(dest: Memory, tmp_path: Path) -> None:
    empty = make_memory(tmp_path / "empty")
    try:
        path = write_export(empty, tmp_path / "empty.jsonl")
        assert len(path.read_text().splitlines()) == 1
        assert import_file(dest, path) == ImportReport()
        assert dest.count() == 0
    finally:
        empty.close()


# -- idempotence -----------------------------------------------------------------------------------


def test_second_import_skips_everything(source: Memory, dest: Memory, tmp_path: Path) -> None:
    path = write_export(source, tmp_path / "export.jsonl")
    first = import_file(dest, path)
    stats = dest.stats()
    snap = snapshot(dest)
    second = import_file(dest, path)
    assert second.notes == 0
    assert second.versions == 0
    assert second.skipped == first.notes + first.links + first.versions + first.llm_calls
    assert dest.stats() == {**stats, "bytes": dest.stats()["bytes"]}
    after = snapshot(dest)
    assert after["notes"] == snap["notes"]
    assert after["links"] == snap["links"]
    assert after["versions"] == snap["versions"]
    assert after["calls"] == snap["calls"]


def test_second_import_does_not_duplicate_call_records(source: Memory, dest: Memory, tmp_path: Path) -> None:
    path = write_export(source, tmp_path / "export.jsonl")
    import_file(dest, path)
    import_file(dest, path)
    for note in dest.store.iter_notes(dest.scope):
        ids = [c.id for c in dest.store.llm_calls(note.id)]
        assert len(ids) == len(set(ids))
    assert snapshot(dest)["calls_per_note"] == snapshot(source)["calls_per_note"]


def test_second_import_reports_nothing_new(source: Memory, dest: Memory, tmp_path: Path) -> None:
    path = write_export(source, tmp_path / "export.jsonl")
    first = import_file(dest, path)
    total = first.notes + first.links + first.versions + first.llm_calls
    assert import_file(dest, path) == ImportReport(skipped=total)


def test_import_into_the_source_itself_skips(source: Memory, tmp_path: Path) -> None:
    path = write_export(source, tmp_path / "export.jsonl")
    before = snapshot(source)
    report = import_file(source, path)
    assert report.notes == report.links == report.versions == report.llm_calls == 0
    assert report.skipped >= len(before["notes"])  # type: ignore[arg-type]
    after = snapshot(source)
    assert after["notes"] == before["notes"]
    assert after["versions"] == before["versions"]


# -- all or nothing --------------------------------------------------------------------------------


def _corrupt(path: Path, make_bad: object, where: float = 0.5) -> tuple[Path, int]:
    lines = path.read_text().splitlines()
    index = max(1, int(len(lines) * where))
    bad = make_bad(lines[index]) if callable(make_bad) else make_bad
    lines[index] = bad
    out = path.with_name("corrupt.jsonl")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out, index + 1


def _note_without_content(line: str) -> str:
    return json.dumps({"type": "note", "data": {"id": "x", "embedding": "AAAAAA=="}})


def _bad_embedding(line: str) -> str:
    return json.dumps({"type": "note", "data": {"content": "x", "embedding": "not base64!!"}})


@pytest.mark.parametrize(
    "bad",
    [
        '{"type": "note", "data": {"content": "trunc',
        "[1, 2, 3]",
        json.dumps({"type": "mystery", "data": {}}),
        json.dumps({"type": "note", "data": "not an object"}),
        json.dumps({"type": "link", "data": {"source_id": "a"}}),
        json.dumps({"type": "version", "data": {"note_id": "a", "version": "one"}}),
        json.dumps({"type": "llm_call", "data": {"id": "a"}}),
        json.dumps({"type": "note", "data": {"content": "no vector"}}),
        _note_without_content,
        _bad_embedding,
    ],
    ids=[
        "truncated",
        "not-object",
        "unknown-type",
        "data-not-object",
        "bad-link",
        "bad-version",
        "bad-call",
        "no-embedding",
        "no-content",
        "bad-base64",
    ],
)
def test_corrupt_line_imports_nothing(source: Memory, dest: Memory, tmp_path: Path, bad: object) -> None:
    good = write_export(source, tmp_path / "export.jsonl")
    path, line_no = _corrupt(good, bad)
    with pytest.raises(InvalidInput) as info:
        import_file(dest, path)
    assert f":{line_no}:" in str(info.value)
    assert dest.count() == 0
    assert dest.stats()["notes"] == dest.stats()["versions"] == dest.stats()["links"] == 0
    assert dest.stats()["llm_calls"] == 0
    assert dest.store.get_meta("embedding_model") is None


def test_corrupt_last_line_imports_nothing(source: Memory, dest: Memory, tmp_path: Path) -> None:
    good = write_export(source, tmp_path / "export.jsonl")
    path = tmp_path / "tail.jsonl"
    path.write_text(good.read_text() + '{"type": "llm_call", "da\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match="nothing was imported"):
        import_file(dest, path)
    assert dest.count() == 0


def test_failure_while_writing_rolls_back(source: Memory, dest: Memory, tmp_path: Path) -> None:
    """A note whose vector has the wrong size passes parsing but fails in the store: nothing stays."""
    good = write_export(source, tmp_path / "export.jsonl")
    lines = good.read_text().splitlines()
    note_lines = [i for i, line in enumerate(lines) if json.loads(line)["type"] == "note"]
    victim = note_lines[len(note_lines) // 2]
    record = json.loads(lines[victim])
    record["data"]["embedding"] = base64.b64encode(np.ones(32, dtype="<f4").tobytes()).decode()
    lines[victim] = json.dumps(record)
    path = tmp_path / "bad-dims.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(AmemError):
        import_file(dest, path)
    assert dest.count() == 0
    assert dest.stats()["versions"] == dest.stats()["llm_calls"] == 0
    assert dest.store.get_meta("embedding_model") is None
    # the memory still works and the good file still imports
    assert import_file(dest, good).notes == source.count()


@pytest.mark.parametrize(
    "first_line",
    [
        json.dumps({"type": "something-else", "version": 1}),
        json.dumps({"type": FORMAT, "version": FORMAT_VERSION + 1}),
        json.dumps({"type": FORMAT}),
        json.dumps([FORMAT, 1]),
        "not json at all",
    ],
    ids=["other-type", "future-version", "no-version", "list", "not-json"],
)
def test_wrong_header(source: Memory, dest: Memory, tmp_path: Path, first_line: str) -> None:
    lines = list(export_lines(source))
    path = tmp_path / "bad-header.jsonl"
    path.write_text("\n".join([first_line, *lines[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput):
        import_file(dest, path)
    assert dest.count() == 0


def test_missing_header(source: Memory, dest: Memory, tmp_path: Path) -> None:
    lines = list(export_lines(source))
    path = tmp_path / "headless.jsonl"
    path.write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="not an amem export"):
        import_file(dest, path)
    assert dest.count() == 0


def test_missing_file(dest: Memory, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot open"):
        import_file(dest, tmp_path / "absent.jsonl")


def test_empty_file_is_invalid_input(dest: Memory, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(InvalidInput):
        import_file(dest, path)


def test_embedding_model_mismatch(source: Memory, tmp_path: Path) -> None:
    path = write_export(source, tmp_path / "export.jsonl")
    other = make_memory(tmp_path / "other32", dims=32)
    try:
        other.add("Something embedded with a 32-dimensional model")
        assert other.store.get_meta("embedding_model") == "fake:32"
        with pytest.raises(InvalidInput, match="fake:64"):
            import_file(other, path)
        assert other.count() == 1
        assert other.stats()["versions"] == 1
    finally:
        other.close()


def test_import_fixes_the_embedding_model_of_an_empty_memory(
    source: Memory, dest: Memory, tmp_path: Path
) -> None:
    import_file(dest, write_export(source, tmp_path / "export.jsonl"))
    assert dest.store.get_meta("embedding_model") == "fake:64"
    wrong = make_memory(tmp_path / "dest", dims=32)  # same store, other embedder
    try:
        with pytest.raises(AmemError, match="fake:64"):
            wrong.add("this would mix embedding spaces")
    finally:
        wrong.close()


def test_import_keeps_event_times_exact(dest: Memory, tmp_path: Path) -> None:
    src = make_memory(tmp_path / "times")
    try:
        when = datetime(2023, 5, 8, 13, 56, 7, 123456, tzinfo=timezone.utc)
        note = src.add("A note with an exact time", event_time=when)
        import_file(dest, write_export(src, tmp_path / "times.jsonl"))
        assert dest.get(note.id).event_time == when
        assert dest.get(note.id).ingest_time == src.get(note.id).ingest_time
    finally:
        src.close()


def test_not_utf8_is_invalid_input(source: Memory, dest: Memory, tmp_path: Path) -> None:
    good = write_export(source, tmp_path / "export.jsonl")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(good.read_bytes() + b'{"type": "note", "data": {"content": "caf\xe9"}}\n')
    with pytest.raises(InvalidInput):
        import_file(dest, path)
    assert dest.count() == 0


def test_round_trip_keeps_superseded_and_merged_notes(tmp_path: Path) -> None:
    """Pointers run forward (an old note points at the newer one that replaced it): the import must
    accept a note whose superseded_by or merged_into names a later line of the file."""
    from amem import upkeep

    src = make_memory(tmp_path / "src")
    old = src.add("Maya lives in Berlin")
    new = src.add("Maya moved to Lisbon in May")
    twin = src.add("Maya's cat is called Miso")
    upkeep.supersede(src, src.get(old.id), new.id, "moved", None)
    upkeep.merge(src, src.get(new.id), src.get(twin.id), "merged by hand", None, None)
    path = write_export(src, tmp_path / "export.jsonl")
    dest = make_memory(tmp_path / "dest")
    try:
        report = import_file(dest, path)
        assert report.notes == 3
        before, after = snapshot(src), snapshot(dest)
        for part in ("notes", "links", "versions", "calls"):
            assert after[part] == before[part], part
        assert dest.get(old.id).superseded_by == new.id and dest.get(twin.id).merged_into == new.id
    finally:
        src.close()
        dest.close()


def test_versions_beyond_a_kept_note_are_skipped(source: Memory, tmp_path: Path) -> None:
    path = write_export(source, tmp_path / "export.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    version = next(r for r in rows if r["type"] == "version")
    rows.append({"type": "version", "data": {**version["data"], "version": 99}})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = import_file(source, path)  # every note is already here
    assert report.notes == 0 and report.versions == 0
    assert all(v.version < 99 for v in source.history(version["data"]["note_id"]))
