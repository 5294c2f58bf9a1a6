"""PostgreSQL keyword search: the pruned top k equals scoring every match, and old schemas migrate."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amem.bench.scale import TextModel
from amem.notes import Note, Scope
from amem.store import Filters, open_store
from amem.store.postgres_keyword import minimal_covers


@given(st.lists(st.floats(0.1, 10.0), min_size=1, max_size=8), st.floats(0.05, 40.0))
def test_minimal_covers_are_exactly_the_minimal_sets_that_reach_the_bar(
    weights: list[float], bar: float
) -> None:
    weights = sorted(weights, reverse=True)
    covers = minimal_covers(weights, bar, cap=10_000)
    assert covers is not None
    expected = set()
    for size in range(1, len(weights) + 1):
        for combo in itertools.combinations(range(len(weights)), size):
            total = sum(weights[i] for i in combo)
            if total >= bar and all(sum(weights[j] for j in combo if j != i) < bar for i in combo):
                expected.add(combo)
    assert {tuple(c) for c in covers} == expected


def test_minimal_covers_gives_up_past_the_cap() -> None:
    assert minimal_covers([1.0] * 10, 5.0, cap=20) is None  # C(10, 5) = 252 sets


def test_pruned_keyword_search_equals_scoring_every_match(pg_url: str) -> None:
    store = open_store(pg_url)
    model = TextModel(seed=3)
    rng = np.random.default_rng(0)
    with store.atomic():
        for i in range(3000):
            n = Note(content=model.note(), user_id="a" if i % 3 else "b", metadata={"odd": i % 2 == 1})
            store.insert_note(n, rng.standard_normal(8).astype(np.float32))
    store._rows("ANALYZE notes")  # type: ignore[attr-defined]
    search = store._keyword  # type: ignore[attr-defined]
    search.stats_from = 100  # common terms' frequencies from pg_stats, as on a large table
    search.cheap_rows = 0  # as few essential terms as possible: the pruning is exercised hard
    queries = [model.query() for _ in range(40)] + ["river", "the ana and ben", "zzzz"]
    queries += [" ".join(random.Random(i).sample(model.words[:40], 5)) for i in range(20)]
    plans: set[str] = set()
    for query, k, scope, filters in itertools.product(
        queries, (1, 5, 10), (Scope(), Scope(user_id="b")), (None, Filters(metadata={"odd": True}))
    ):
        search.prune = False
        every = store.keyword(query, k, scope, filters)
        search.prune = True
        pruned = store.keyword(query, k, scope, filters)
        plans.add(search.last_plan)
        assert [i for i, _ in pruned] == [i for i, _ in every], (query, k, scope, filters)
        assert [s for _, s in pruned] == pytest.approx([s for _, s in every])
    assert {"essential", "covers"} <= plans  # both shortcuts were taken somewhere
    store.close()


def test_a_schema_1_database_migrates_and_finds_stop_words(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import amem.store.postgres as pg

    upkeep = pg.MIGRATIONS[2][1]
    monkeypatch.setattr(pg, "MIGRATIONS", pg.MIGRATIONS[:1])
    old = open_store(pg_url)
    import psycopg

    with psycopg.connect(pg_url, autocommit=True, options="-c search_path=amem,public") as conn:
        conn.execute(upkeep)  # the columns today's insert writes; migration 3 adds them again as a no-op
    n = Note(content="who was there with her", keywords=["kayak"])
    old.insert_note(n, np.ones(4, dtype=np.float32))
    old.close()
    monkeypatch.undo()
    store = open_store(pg_url)
    assert store.get_meta("dimensions") == "4" and store.get_note(n.id) == n
    assert [i for i, _ in store.keyword("who was she with", 5, Scope())] == [n.id]
    assert [i for i, _ in store.keyword("kayaks", 5, Scope())] == [n.id]
    store.close()


def test_paths_urls_versions_and_addresses_are_found_by_their_parts(pg_url: str) -> None:
    """PostgreSQL's parser keeps '/etc/hosts' or 'v1.2.3' as one token; the index splits words the way
    a query does (runs of \\w), as SQLite's FTS5 does, so each part finds the note (migration 4)."""
    store = open_store(pg_url)
    texts = [
        "edit /etc/hosts first",
        "see http://example.com/docs",
        "upgrade to v1.2.3",
        "mail ana@bakery.pt",
    ]
    ids = []
    for i, text in enumerate(texts):
        n = Note(content=text)
        store.insert_note(n, np.eye(8, dtype=np.float32)[i])
        ids.append(n.id)
    for query, want in [("hosts", 0), ("etc", 0), ("example", 1), ("docs", 1), ("v1", 2), ("bakery", 3)]:
        assert [i for i, _ in store.keyword(query, 5, Scope())] == [ids[want]], query
    store.close()
