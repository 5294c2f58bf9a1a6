"""The Store contract: every backend must pass these with the same assertions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from amem.errors import InvalidInput, StoreError
from amem.notes import EnrichState, Link, LLMCall, Note, NoteVersion, Scope, VersionCause
from amem.store import Filters, Store, open_store

DIMS = 8
StoreFactory = Callable[[], Store]


def _sqlite_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    return lambda: open_store(f"sqlite:///{tmp_path / 'contract.db'}")


def _postgres_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    url = request.getfixturevalue("pg_url")  # a fresh database on the session's real server
    return lambda: open_store(url)


FACTORIES = {"sqlite": _sqlite_factory, "postgres": _postgres_factory}


@pytest.fixture(params=sorted(FACTORIES))
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A factory that opens the same database again (a 'restart')."""
    return FACTORIES[request.param](request, tmp_path)


@pytest.fixture
def store(reopen: StoreFactory) -> Iterator[Store]:
    s = reopen()
    yield s
    s.close()


def vec(*hot: int) -> np.ndarray:
    v = np.zeros(DIMS, dtype=np.float32)
    for i in hot:
        v[i] = 1.0
    return v / np.linalg.norm(v)


def note(content: str, user: str | None = "u1", **kw: object) -> Note:
    return Note(content=content, user_id=user, **kw)  # type: ignore[arg-type]


def test_insert_get_roundtrip_keeps_every_field(store: Store) -> None:
    n = note(
        "Caroline went to a support group",
        keywords=["support group"],
        tags=["community"],
        context="Caroline attended a group.",
        agent_id="a1",
        run_id="r1",
        metadata={"dia_id": "D1:3", "n": 3, "flag": True},
        event_time=datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc),
        state=EnrichState.enriched,
        content_hash="abc",
        embedding_model="fake:8",
    )
    store.insert_note(n, vec(0))
    got = store.get_note(n.id)
    assert got is not None
    assert got.model_dump() == n.model_dump()
    assert np.allclose(store.get_vectors([n.id])[n.id], vec(0))


def test_update_replaces_fields_vector_and_keyword_entry(store: Store) -> None:
    n = note("apples and pears")
    store.insert_note(n, vec(0))
    changed = n.model_copy(update={"context": "zucchini season", "version": 2})
    store.update_note(changed, vec(1))
    assert store.get_note(n.id).context == "zucchini season"  # type: ignore[union-attr]
    assert store.nearest(vec(1), 1, Scope())[0][0] == n.id
    assert [i for i, _ in store.keyword("zucchini", 5, Scope())] == [n.id]


def test_delete_removes_note_links_versions_and_index_entries(store: Store) -> None:
    a, b, c = note("alpha one"), note("beta two"), note("gamma three")
    for i, n in enumerate((a, b, c)):
        store.insert_note(n, vec(i))
    store.upsert_links([Link(source_id=a.id, target_id=b.id), Link(source_id=c.id, target_id=a.id)])
    store.add_version(NoteVersion.snapshot(a, VersionCause.create))
    store.delete_note(a.id)
    assert store.get_note(a.id) is None
    assert store.links_for([a.id, b.id, c.id]) == []
    assert store.versions(a.id) == []
    assert a.id not in [i for i, _ in store.nearest(vec(0), 10, Scope())]
    assert store.keyword("alpha", 5, Scope()) == []


def test_links_upsert_is_idempotent_and_found_from_both_ends(store: Store) -> None:
    a, b = note("one"), note("two")
    store.insert_note(a, vec(0))
    store.insert_note(b, vec(1))
    store.upsert_links([Link(source_id=a.id, target_id=b.id, reason="first")])
    store.upsert_links([Link(source_id=a.id, target_id=b.id, reason="second", weight=0.5)])
    for end in (a.id, b.id):
        links = store.links_for([end])
        assert len(links) == 1
        assert links[0].reason == "second" and links[0].weight == 0.5
    store.delete_links([(a.id, b.id)])
    assert store.links_for([a.id]) == []


def test_versions_are_ordered_and_complete(store: Store) -> None:
    n = note("first text", context="v1")
    store.insert_note(n, vec(0))
    store.add_version(NoteVersion.snapshot(n, VersionCause.create, "call-1"))
    n2 = n.model_copy(update={"context": "v2", "version": 2})
    store.add_version(NoteVersion.snapshot(n2, VersionCause.evolve, "call-2", "evolved by x"))
    history = store.versions(n.id)
    assert [(v.version, v.cause, v.context, v.llm_call_id) for v in history] == [
        (1, VersionCause.create, "v1", "call-1"),
        (2, VersionCause.evolve, "v2", "call-2"),
    ]


def test_scope_filters_dense_and_keyword_search(store: Store) -> None:
    mine, theirs = note("shared words here", user="alice"), note("shared words here", user="bob")
    store.insert_note(mine, vec(0))
    store.insert_note(theirs, vec(0))
    for scope, expected in ((Scope(user_id="alice"), {mine.id}), (Scope(user_id="bob"), {theirs.id})):
        assert {i for i, _ in store.nearest(vec(0), 10, scope)} == expected
        assert {i for i, _ in store.keyword("shared", 10, scope)} == expected
    assert {i for i, _ in store.nearest(vec(0), 10, Scope())} == {mine.id, theirs.id}
    assert store.nearest(vec(0), 10, Scope(user_id="nobody")) == []


def test_exact_scope_matches_missing_fields_only_to_missing(store: Store) -> None:
    scoped, global_ = note("x", user="alice"), note("x", user=None)
    store.insert_note(scoped, vec(0))
    store.insert_note(global_, vec(0))
    exact_global = Scope(exact=True)
    assert [i for i, _ in store.nearest(vec(0), 10, exact_global)] == [global_.id]
    assert store.list_notes(exact_global) == [store.get_note(global_.id)]


def test_nearest_is_cosine_best_first_and_honours_exclude(store: Store) -> None:
    a, b, c = note("a"), note("b"), note("c")
    store.insert_note(a, vec(0))
    store.insert_note(b, vec(0, 1))
    store.insert_note(c, vec(2))
    found = store.nearest(vec(0), 3, Scope())
    assert [i for i, _ in found] == [a.id, b.id, c.id]
    assert found[0][1] == pytest.approx(1.0, abs=1e-5)
    assert found[1][1] == pytest.approx(1 / np.sqrt(2), abs=1e-5)
    assert store.nearest(vec(0), 3, Scope(), exclude=[a.id])[0][0] == b.id


def test_filters_on_metadata_time_and_state(store: Store) -> None:
    base = datetime(2023, 1, 1, tzinfo=timezone.utc)
    notes = [
        note(
            f"event {i}",
            metadata={"speaker": "A" if i % 2 else "B", "n": i},
            event_time=base + timedelta(days=i),
            state=EnrichState.enriched,
        )
        for i in range(6)
    ]
    notes[0].state = EnrichState.pending
    for i, n in enumerate(notes):
        store.insert_note(n, vec(i % DIMS))
    f = Filters(metadata={"speaker": "A"})
    assert {n.id for n in store.list_notes(Scope(), f)} == {notes[1].id, notes[3].id, notes[5].id}
    window = Filters(event_after=base + timedelta(days=2), event_before=base + timedelta(days=4))
    assert {i for i, _ in store.nearest(vec(0), 10, Scope(), window)} == {notes[2].id, notes[3].id}
    assert {i for i, _ in store.keyword("event", 10, Scope(), window)} == {notes[2].id, notes[3].id}
    assert store.count_notes(Scope(), Filters(states=[EnrichState.pending])) == 1
    assert store.count_notes(Scope(), Filters(metadata={"n": 4})) == 1


def test_metadata_filter_keys_are_validated() -> None:
    with pytest.raises(InvalidInput):
        Filters(metadata={"a') OR 1=1 --": "x"})


@pytest.mark.parametrize(
    "query", ['"', "NEAR(", "a AND OR b", "*", "col:value", "') DROP TABLE notes; --", "ünïcödé", ""]
)
def test_keyword_search_accepts_any_text(store: Store, query: str) -> None:
    store.insert_note(note("drop table of contents"), vec(0))
    store.keyword(query, 5, Scope())  # must not raise
    assert store.count_notes(Scope()) == 1


def test_keyword_search_uses_stemming(store: Store) -> None:
    n = note("She was painting sunrises at the lake")
    store.insert_note(n, vec(0))
    assert [i for i, _ in store.keyword("paints sunrise", 5, Scope())] == [n.id]


def test_atomic_rolls_back_everything(store: Store) -> None:
    a = note("kept")
    store.insert_note(a, vec(0))
    with pytest.raises(RuntimeError), store.atomic():
        store.insert_note(note("rolled back"), vec(1))
        store.upsert_links([Link(source_id=a.id, target_id=a.id)])
        raise RuntimeError("boom")
    assert store.count_notes(Scope()) == 1
    assert store.links_for([a.id]) == []
    assert [i for i, _ in store.nearest(vec(1), 5, Scope())] == [a.id]


def test_restart_loses_nothing(reopen: StoreFactory) -> None:
    s = reopen()
    a, b = note("persist me"), note("and me")
    s.insert_note(a, vec(0))
    s.insert_note(b, vec(1))
    s.upsert_links([Link(source_id=a.id, target_id=b.id, reason="r")])
    s.add_version(NoteVersion.snapshot(a, VersionCause.create))
    s.record_llm_call(LLMCall(step="construct", prompt_version="v", model="m", note_ids=[a.id]))
    s.cache_put("k", "v")
    s.close()
    s2 = reopen()
    try:
        assert s2.get_note(a.id) == a
        assert s2.links_for([a.id])[0].reason == "r"
        assert len(s2.versions(a.id)) == 1
        assert s2.llm_calls(a.id)[0].step == "construct"
        assert s2.cache_get("k") == "v"
        assert s2.nearest(vec(1), 1, Scope())[0][0] == b.id
        assert [i for i, _ in s2.keyword("persist", 5, Scope())] == [a.id]
    finally:
        s2.close()


def test_second_connection_sees_writes_of_the_first(reopen: StoreFactory) -> None:
    first, second = reopen(), reopen()
    try:
        first.insert_note(note("one"), vec(0))
        assert len(second.nearest(vec(0), 5, Scope())) == 1  # loads the matrix
        late = note("two")
        first.insert_note(late, vec(1))
        assert second.nearest(vec(1), 1, Scope())[0][0] == late.id  # noticed and reloaded
    finally:
        first.close()
        second.close()


def test_dimension_mismatch_is_refused(store: Store) -> None:
    store.insert_note(note("x"), vec(0))
    with pytest.raises(StoreError):
        store.insert_note(note("y"), np.ones(DIMS + 1, dtype=np.float32))
    with pytest.raises(StoreError):
        store.nearest(np.ones(DIMS + 1, dtype=np.float32), 1, Scope())


def test_list_is_newest_first_with_paging_and_iter_is_oldest_first(store: Store) -> None:
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    notes = [note(f"n{i}", ingest_time=base + timedelta(minutes=i)) for i in range(5)]
    for i, n in enumerate(notes):
        store.insert_note(n, vec(i))
    assert [n.id for n in store.list_notes(Scope(), limit=2)] == [notes[4].id, notes[3].id]
    assert [n.id for n in store.list_notes(Scope(), limit=2, offset=2)] == [notes[2].id, notes[1].id]
    assert [n.id for n in store.iter_notes(Scope(), batch=2)] == [n.id for n in notes]


def test_find_by_hash_is_scoped(store: Store) -> None:
    a, b = note("same", user="alice", content_hash="h"), note("same", user="bob", content_hash="h")
    store.insert_note(a, vec(0))
    store.insert_note(b, vec(0))
    assert store.find_by_hash(Scope(user_id="alice"), "h") == [a.id]


def test_llm_calls_are_recorded_per_note(store: Store) -> None:
    call = LLMCall(
        step="construct",
        prompt_version="note-v1",
        model="m",
        input_tokens=10,
        output_tokens=3,
        note_ids=["n1", "n2"],
    )
    store.record_llm_call(call)
    assert store.llm_calls("n2")[0].id == call.id
    assert store.llm_calls()[0].input_tokens == 10


def test_stats_counts(store: Store) -> None:
    store.insert_note(note("x"), vec(0))
    stats = store.stats()
    assert stats["notes"] == 1 and stats["links"] == 0


def test_keyword_search_leaves_out_terms_in_most_notes(store: Store) -> None:
    # "alice" is in every note: it cannot tell notes apart, so with a rarer term present only the notes
    # with that term come back (and scoring every "alice" match is what made big stores slow)
    notes = [note(f"Alice: entry number {i} about the weather") for i in range(150)]
    notes[70] = note("Alice: went kayaking on the river")
    for i, n in enumerate(notes):
        store.insert_note(n, vec(i % 8))
    assert [i for i, _ in store.keyword("what did alice do in her kayak", 10, Scope(user_id="u1"))] == [
        notes[70].id
    ]
    # when every term is common, the search still answers
    assert len(store.keyword("alice", 10, Scope(user_id="u1"))) == 10


def test_keyword_search_with_stop_words_only_still_finds_notes(store: Store) -> None:
    # a query of stop words alone keeps them, and both stores index them
    a, b = note("who was there with her"), note("kayak trip on the river")
    store.insert_note(a, vec(0))
    store.insert_note(b, vec(1))
    assert [i for i, _ in store.keyword("Who was she with?", 5, Scope())] == [a.id]
    # with a content word present the stop words are left out
    assert [i for i, _ in store.keyword("who was on the kayak", 5, Scope())] == [b.id]
