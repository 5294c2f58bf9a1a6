"""The Store contract: every backend must pass these with the same assertions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from amem.errors import InvalidInput, StoreError
from amem.notes import (
    EnrichState,
    Link,
    LLMCall,
    Note,
    NoteStatus,
    NoteVersion,
    Scope,
    VersionCause,
)
from amem.store import Filters, Store, open_store

DIMS = 8
StoreFactory = Callable[[], Store]


def _sqlite_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    return lambda: open_store(f"sqlite:///{tmp_path / 'contract.db'}")


def _postgres_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    url = request.getfixturevalue("pg_url")  # a fresh database on the session's real server
    return lambda: open_store(url)


def _citus_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    url = request.getfixturevalue("citus_url")  # a fresh database on a live 3-node Citus cluster
    return lambda: open_store(url)


FACTORIES = {"sqlite": _sqlite_factory, "postgres": _postgres_factory, "citus": _citus_factory}


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
    found = store.get_llm_calls([call.id, "absent", call.id])
    assert list(found) == [call.id] and found[call.id].note_ids == ["n1", "n2"]
    assert store.get_llm_calls([]) == {}


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


# -- upkeep: status, pin, expiry, provenance, usage counters, versions with links and batch ---------------

ACTIVE = Filters(statuses=[NoteStatus.active])
T0 = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def test_upkeep_fields_roundtrip_and_update_keeps_usage_counters(reopen: StoreFactory) -> None:
    s = reopen()
    n = note(
        "merged away",
        status=NoteStatus.merged,
        pinned=True,
        expires_at=T0 + timedelta(days=30),
        superseded_by="newer-id",
        merged_into="keeper-id",
        sources=[{"id": "dup-1", "content": "merged away", "metadata": {"k": 1, "flag": True}}],
        retrievals=3,
        last_retrieved_at=T0,
    )
    s.insert_note(n, vec(0))
    assert s.get_note(n.id) == n
    changed = n.model_copy(
        update={
            "status": NoteStatus.archived,
            "pinned": False,
            "expires_at": None,
            "superseded_by": None,
            "sources": [*n.sources, {"id": "dup-2", "metadata": {}}],
            "version": 2,
            "retrievals": 0,  # a stale copy: the stored counters win
            "last_retrieved_at": None,
        }
    )
    s.update_note(changed)
    expected = changed.model_copy(update={"retrievals": 3, "last_retrieved_at": T0})
    assert s.get_note(n.id) == expected
    assert s.list_notes(Scope()) == [expected]
    assert list(s.iter_notes(Scope())) == [expected]
    s.close()
    s2 = reopen()
    try:
        assert s2.get_note(n.id) == expected
    finally:
        s2.close()


def test_status_filter_keeps_archived_and_merged_notes_out(store: Store) -> None:
    a = note("kayak on the river", metadata={"speaker": "A"})
    b = note("kayak on the lake", metadata={"speaker": "B"})
    archived = note("kayak archived", metadata={"speaker": "A"}, status=NoteStatus.archived)
    merged = note("kayak merged", metadata={"speaker": "A"}, status=NoteStatus.merged)
    for n in (a, b, archived, merged):
        store.insert_note(n, vec(0))
    both = Filters(statuses=[NoteStatus.active], metadata={"speaker": "A"})
    for filters, expected in ((ACTIVE, {a.id, b.id}), (both, {a.id})):
        assert {i for i, _ in store.nearest(vec(0), 10, Scope(), filters)} == expected
        assert {i for i, _ in store.keyword("kayak", 10, Scope(), filters)} == expected
        assert {n.id for n in store.list_notes(Scope(), filters)} == expected
        assert store.count_notes(Scope(), filters) == len(expected)
    out = Filters(statuses=[NoteStatus.archived, NoteStatus.merged])
    assert {i for i, _ in store.nearest(vec(0), 10, Scope(), out)} == {archived.id, merged.id}
    assert len(store.nearest(vec(0), 10, Scope())) == 4  # no filter: every status
    # archiving by an update takes the note out of search at once, and restoring brings it back
    store.update_note(a.model_copy(update={"status": NoteStatus.archived, "version": 2}))
    assert [i for i, _ in store.nearest(vec(0), 10, Scope(), ACTIVE)] == [b.id]
    assert [i for i, _ in store.keyword("river", 10, Scope(), ACTIVE)] == []
    store.update_note(a.model_copy(update={"version": 3}))
    assert {i for i, _ in store.nearest(vec(0), 10, Scope(), both)} == {a.id}


def test_record_retrievals_adds_up_without_a_version(store: Store) -> None:
    a, b = note("one"), note("two")
    store.insert_note(a, vec(0))
    store.insert_note(b, vec(1))
    store.record_retrievals({a.id: 2, b.id: 1}, T0)
    store.record_retrievals({a.id: 1, "no-such-note": 5}, T0 + timedelta(hours=1))
    store.record_retrievals({}, T0)
    got = store.get_notes([a.id, b.id])
    assert (got[a.id].retrievals, got[a.id].last_retrieved_at) == (3, T0 + timedelta(hours=1))
    assert (got[b.id].retrievals, got[b.id].last_retrieved_at) == (1, T0)
    assert got[a.id].version == 1 and store.versions(a.id) == []
    with store.atomic():  # inside a caller's transaction too
        store.record_retrievals({b.id: 4}, T0)
    assert store.get_note(b.id).retrievals == 5  # type: ignore[union-attr]


def test_iter_links_follows_the_source_scope_across_pages(store: Store) -> None:
    alice = [note(f"alice {i}", user="alice") for i in range(4)]
    alice.append(note("alice in a run", user="alice", run_id="r1"))
    bob, bob_too = note("bob", user="bob"), note("bob too", user="bob")
    for i, n in enumerate([*alice, bob, bob_too]):
        store.insert_note(n, vec(i))
    pairs = [(x.id, y.id) for x in alice[:4] for y in alice[:4] if x is not y][:7]
    pairs += [(alice[4].id, alice[0].id), (bob.id, bob_too.id)]  # from a narrower scope; bob's own
    store.upsert_links([Link(source_id=s, target_id=t, reason=f"{s}>{t}") for s, t in pairs])
    found = list(store.iter_links(Scope(user_id="alice"), batch=2))
    assert len(found) == 8
    assert {(lk.source_id, lk.target_id) for lk in found} == set(pairs[:-1])
    assert len(list(store.iter_links(Scope(user_id="alice", run_id="r1")))) == 1
    assert all(lk.reason == f"{lk.source_id}>{lk.target_id}" for lk in found)
    assert [(lk.source_id, lk.target_id) for lk in store.iter_links(Scope(user_id="bob"))] == [pairs[-1]]
    assert len(list(store.iter_links(Scope(), batch=3))) == 9
    assert list(store.iter_links(Scope(user_id="nobody"))) == []


def test_duplicate_groups_within_exact_scopes_only(store: Store) -> None:
    first = note("same", user="alice", content_hash="h")
    second = note("same", user="alice", content_hash="h")
    archived = note("same", user="alice", content_hash="h", status=NoteStatus.archived)
    other_user = note("same", user="bob", content_hash="h")
    in_run = note("same", user="alice", run_id="r1", content_hash="h")
    in_run_too = note("same", user="alice", run_id="r1", content_hash="h")
    unowned = [note("same", user=None, content_hash="h") for _ in range(2)]
    single = note("other", user="alice", content_hash="g")
    for n in (second, first, archived, other_user, in_run, single, in_run_too, *unowned):
        store.insert_note(n, vec(0))
    groups = store.duplicate_groups(Scope())
    assert sorted(groups) == sorted(
        [[second.id, first.id], [in_run.id, in_run_too.id], [unowned[0].id, unowned[1].id]]
    )
    assert sorted(store.duplicate_groups(Scope(user_id="alice"))) == sorted(
        [[second.id, first.id], [in_run.id, in_run_too.id]]
    )
    assert store.duplicate_groups(Scope(user_id="alice", exact=True)) == [[second.id, first.id]]
    assert store.duplicate_groups(Scope(user_id="bob")) == []


def _unit(*values: float) -> np.ndarray:
    v = np.zeros(DIMS, dtype=np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("graph_walk", [False, True])
def test_similar_pairs_in_one_exact_scope_older_first_best_first(
    store: Store, graph_walk: bool, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if graph_walk:  # PostgreSQL compares a small scope exactly; here every scope walks the HNSW index
        if request.node.callspec.params["reopen"] == "sqlite":
            pytest.skip("only PostgreSQL walks a graph")
        monkeypatch.setattr("amem.store.postgres_upkeep.EXACT_SCOPE_MAX", 0)
    later = T0 + timedelta(days=1)
    newer_close = note("close b", user="alice", updated_at=T0)
    older_close = note("close a", user="alice", updated_at=T0)
    near_1 = note("near 1", user="alice", updated_at=T0)
    near_2 = note("near 2", user="alice", updated_at=later)
    far = note("far", user="alice", updated_at=later)
    bob_twin = note("bob's copy", user="bob", updated_at=later)
    run_twin = note("in a run", user="alice", run_id="r1", updated_at=later)
    archived_twin = note("archived", user="alice", status=NoteStatus.archived, updated_at=later)
    store.insert_note(older_close, _unit(1, 0.05))
    store.insert_note(newer_close, _unit(1, 0.0))  # cosine ~0.9988 with older_close
    store.insert_note(near_1, _unit(0, 0, 1, 0.0))
    store.insert_note(near_2, _unit(0, 0, 1, 0.4))  # cosine ~0.928 with near_1
    store.insert_note(far, _unit(0, 0, 0, 0, 1))
    for twin in (bob_twin, run_twin, archived_twin):
        store.insert_note(twin, _unit(1, 0.0))
    close = (older_close.id, newer_close.id, float(_unit(1, 0.05) @ _unit(1, 0.0)))
    near = (near_1.id, near_2.id, float(_unit(0, 0, 1) @ _unit(0, 0, 1, 0.4)))

    def pairs(scope: Scope, threshold: float, **kw: object) -> list[tuple[str, str, float]]:
        found = store.similar_pairs(scope, threshold, **kw)  # type: ignore[arg-type]
        return [(a, b, pytest.approx(sim, abs=1e-5)) for a, b, sim in found]

    assert pairs(Scope(), 0.9) == [close, near]  # best first, the older note first in each pair
    assert pairs(Scope(), 0.95) == [close]
    assert pairs(Scope(), 0.9, limit=1) == [close]
    assert pairs(Scope(), 0.9999) == []
    assert pairs(Scope(user_id="alice", exact=True), 0.9) == [close, near]
    assert pairs(Scope(user_id="bob"), 0.5) == []  # bob's twin of the close pair has no partner in bob
    # since: only pairs with a note updated at or after it (near_2 was, the close pair was not)
    assert pairs(Scope(), 0.9, since=later) == [near]
    assert pairs(Scope(), 0.9, since=later + timedelta(seconds=1)) == []
    # a note that leaves search leaves its pairs
    store.update_note(newer_close.model_copy(update={"status": NoteStatus.merged, "version": 2}))
    assert pairs(Scope(), 0.9) == [near]


def test_versions_keep_links_snapshot_and_batch(reopen: StoreFactory) -> None:
    s = reopen()
    a = note(
        "a",
        pinned=True,
        expires_at=T0,
        sources=[{"id": "x", "metadata": {"k": "v"}}],
        updated_at=T0,
    )
    b = note("b", updated_at=T0)
    s.insert_note(a, vec(0))
    s.insert_note(b, vec(1))
    links = [
        Link(source_id=a.id, target_id=b.id, weight=0.75, reason="why", created_at=T0, llm_call_id="c1"),
        Link(source_id=b.id, target_id=a.id),  # incoming: not part of a's snapshot
    ]
    s.upsert_links(links)
    a3 = a.model_copy(update={"version": 3, "status": NoteStatus.archived})
    first = NoteVersion.snapshot(a3, VersionCause.archive, detail="forgotten", links=links, batch="run-1")
    second = NoteVersion.snapshot(b, VersionCause.merge, links=[], batch="run-1")  # same time, later
    alone = NoteVersion.snapshot(a, VersionCause.create)
    b_later = b.model_copy(update={"version": 2, "updated_at": T0 - timedelta(seconds=1)})
    earlier = NoteVersion.snapshot(b_later, VersionCause.pin, batch="run-1")  # written last, dated first
    for v in (alone, first, second, earlier):
        s.add_version(v)
    assert first.links is not None and [lk.target_id for lk in first.links] == [b.id]
    assert alone.links is None
    s.close()
    s2 = reopen()
    try:
        assert s2.versions(a.id) == [alone, first]
        assert s2.versions(b.id) == [second, earlier]
        assert s2.versions_in_batch("run-1") == [earlier, first, second]
        assert s2.versions_in_batch("run-2") == []
    finally:
        s2.close()


def _downgrade(backend: str, request: pytest.FixtureRequest, tmp_path: Path, note_id: str) -> None:
    """Turn the store's database back into the schema before upkeep (what an older amem wrote), with a
    version in the old snapshot format."""
    old_snapshot = {
        "content": "old",
        "keywords": ["k"],
        "tags": [],
        "context": "",
        "metadata": {},
        "event_time": "2023-05-08T13:56:00Z",
        "state": "enriched",
    }
    if backend == "sqlite":
        import json
        import sqlite3

        db = sqlite3.connect(tmp_path / "contract.db", isolation_level=None)
        db.executescript(
            """DROP INDEX notes_status; DROP INDEX versions_batch;
            ALTER TABLE notes DROP COLUMN status; ALTER TABLE notes DROP COLUMN pinned;
            ALTER TABLE notes DROP COLUMN expires_at; ALTER TABLE notes DROP COLUMN superseded_by;
            ALTER TABLE notes DROP COLUMN merged_into; ALTER TABLE notes DROP COLUMN sources;
            ALTER TABLE notes DROP COLUMN retrievals; ALTER TABLE notes DROP COLUMN last_retrieved_at;
            ALTER TABLE versions DROP COLUMN batch; DELETE FROM schema_migrations WHERE version = 2;"""
        )
        db.execute(
            "INSERT INTO versions VALUES (?, 1, 'create', '2023-05-08T13:56:00.000000Z', NULL, '', ?)",
            (note_id, json.dumps(old_snapshot)),
        )
        db.close()
        return
    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(request.getfixturevalue("pg_url"), autocommit=True) as conn:
        conn.execute(UNDO_USER_KEYS)
        conn.execute(
            """ALTER TABLE amem.notes DROP COLUMN status, DROP COLUMN pinned, DROP COLUMN expires_at,
               DROP COLUMN superseded_by, DROP COLUMN merged_into, DROP COLUMN sources,
               DROP COLUMN retrievals, DROP COLUMN last_retrieved_at"""
        )
        conn.execute("ALTER TABLE amem.versions DROP COLUMN batch, DROP COLUMN seq")
        conn.execute("DELETE FROM amem.schema_migrations WHERE version >= 3")
        conn.execute(
            "INSERT INTO amem.versions VALUES (%s, 1, 'create', %s, NULL, '', %s)",
            (note_id, datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc), Jsonb(old_snapshot)),
        )


#: PostgreSQL migration 6 undone: the keys and columns as they were before the user led them
UNDO_USER_KEYS = """
    SET search_path = amem, public;
    ALTER TABLE links DROP CONSTRAINT links_user_id_source_id_fkey,
        DROP CONSTRAINT links_user_id_target_id_fkey, DROP CONSTRAINT links_pkey;
    DROP INDEX links_target;
    ALTER TABLE links DROP COLUMN user_id;
    ALTER TABLE notes DROP CONSTRAINT notes_pkey, ADD PRIMARY KEY (id), ADD UNIQUE (rid),
        ALTER COLUMN user_id DROP NOT NULL, ALTER COLUMN user_id DROP DEFAULT;
    DROP INDEX notes_id; DROP INDEX notes_rid;
    UPDATE notes SET user_id = NULL WHERE user_id = '';
    ALTER TABLE links ADD PRIMARY KEY (source_id, target_id),
        ADD FOREIGN KEY (source_id) REFERENCES notes (id) ON DELETE CASCADE,
        ADD FOREIGN KEY (target_id) REFERENCES notes (id) ON DELETE CASCADE;
    CREATE INDEX links_target ON links (target_id);
    ALTER TABLE versions DROP CONSTRAINT versions_pkey, DROP COLUMN user_id,
        ADD PRIMARY KEY (note_id, version);
    DROP INDEX llm_calls_id;
    ALTER TABLE llm_calls DROP CONSTRAINT llm_calls_pkey, DROP COLUMN user_id, ADD PRIMARY KEY (id);
    ALTER TABLE llm_call_notes DROP CONSTRAINT llm_call_notes_pkey, DROP COLUMN user_id,
        ADD PRIMARY KEY (call_id, note_id);
    CREATE INDEX llm_call_notes_note ON llm_call_notes (note_id);
    DELETE FROM schema_migrations WHERE version = 6;
    RESET search_path;
"""


def test_a_database_from_before_upkeep_migrates_and_old_versions_read(
    reopen: StoreFactory, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if request.node.callspec.params["reopen"] == "citus":
        pytest.skip("a database is distributed at schema 6: there is no older Citus database to migrate")
    s = reopen()
    old = note("written by an older amem", context="old")
    s.insert_note(old, vec(0))
    s.close()
    _downgrade(request.node.callspec.params["reopen"], request, tmp_path, old.id)
    s2 = reopen()
    try:
        got = s2.get_note(old.id)
        assert got is not None and got.content == old.content
        assert (got.status, got.pinned, got.sources, got.retrievals) == (NoteStatus.active, False, [], 0)
        assert got.expires_at is None and got.last_retrieved_at is None and got.merged_into is None
        [version] = s2.versions(old.id)
        assert (version.content, version.status, version.links, version.batch) == (
            "old",
            NoteStatus.active,
            None,
            None,
        )
        assert [i for i, _ in s2.nearest(vec(0), 5, Scope(), ACTIVE)] == [old.id]
        s2.record_retrievals({old.id: 2}, T0)
        archived = got.model_copy(update={"status": NoteStatus.archived, "version": 2})
        s2.add_version(NoteVersion.snapshot(archived, VersionCause.archive, links=[], batch="b"))
        assert s2.get_note(old.id).retrievals == 2  # type: ignore[union-attr]
        assert [v.cause for v in s2.versions_in_batch("b")] == [VersionCause.archive]
    finally:
        s2.close()


def test_find_by_hashes_answers_many_hashes_within_a_scope(store: Store) -> None:
    a, b, c = (
        note("one", content_hash="h1"),
        note("two", content_hash="h2"),
        note("x", "u2", content_hash="h1"),
    )
    for n, v in ((a, vec(0)), (b, vec(1)), (c, vec(2))):
        store.insert_note(n, v)
    found = store.find_by_hashes(Scope(user_id="u1", exact=True), ["h1", "h2", "h3"])
    assert found == {"h1": [a.id], "h2": [b.id]}
    assert store.find_by_hashes(Scope(user_id="u1", exact=True), []) == {}


def test_lock_hashes_holds_a_second_writer_of_the_same_content_until_commit(reopen: StoreFactory) -> None:
    """Two connections (two processes): the second gets past ``lock_hashes`` for the same scope and hash
    only once the first transaction has ended; on PostgreSQL another scope or hash does not wait."""
    import threading
    import time

    first, second = reopen(), reopen()
    first.insert_note(note("zero", content_hash="h0"), vec(1))  # PostgreSQL fixes the vector column now
    scope = Scope(user_id="u1", exact=True)
    holding = threading.Event()

    def hold() -> None:
        with first.atomic():
            first.lock_hashes(scope, ["h2", "h1"])
            first.insert_note(note("one", content_hash="h1"), vec(0))  # SQLite: the write lock is taken
            holding.set()
            time.sleep(0.5)

    def other_keys_pass() -> None:
        with second.atomic():
            second.lock_hashes(Scope(user_id="u2", exact=True), ["h1"])
            second.lock_hashes(scope, ["h3"])

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(10)
    if first.url.startswith("postgresql"):
        began = time.monotonic()
        other_keys_pass()
        assert time.monotonic() - began < 0.4
    with second.atomic():
        second.lock_hashes(scope, ["h1"])
        assert second.find_by_hashes(scope, ["h1"])  # the first writer's note is visible by then
    thread.join()
    first.close()
    second.close()
