"""Retrieval: hybrid fusion, the paper preset, link expansion under a budget, filters, explanations."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from amem import Filters, InvalidInput, Memory
from amem.llm.fake import FakeLLM
from amem.steps.retrieve import approx_tokens

from .conftest import make_memory


def attrs(**extra: object) -> dict[str, object]:
    return {"keywords": ["k"], "tags": ["t"], "context": "A context sentence.", **extra}


@pytest.fixture
def linked(tmp_path: Path) -> tuple[Memory, dict[str, str]]:
    """Three notes: 'kayak' <- linked from 'paddle trip', and an unrelated one."""
    llm = FakeLLM()
    m = make_memory(tmp_path / "r.db", llm=llm, link_floor=-1.0)
    llm.script = [attrs(context="Sam bought a red kayak.")]
    kayak = m.add("Sam bought a red kayak.", event_time=datetime(2023, 1, 5))
    llm.script = [attrs(context="Unrelated.")]
    other = m.add("The bakery sells rye bread.", event_time=datetime(2023, 3, 1))
    llm.script = [attrs(context="Sam plans a trip.", links=[{"to": "N2", "why": "the kayak for the trip"}])]
    trip = m.add(
        "Sam plans a river trip next summer with his kayak.",
        event_time=datetime(2023, 6, 1),
        metadata={"topic": "travel"},
    )
    # N2 is whichever neighbour was second; find the link target to know which note it was
    return m, {"kayak": kayak.id, "other": other.id, "trip": trip.id}


def test_scores_are_cosine_similarities(linked: tuple[Memory, dict[str, str]]) -> None:
    m, _ = linked
    query = "river trip"
    qv = m.embedder.embed_query(query)
    for hit in m.search(query, k=3):
        vec = m.store.get_vectors([hit.note.id])[hit.note.id]
        assert hit.score == pytest.approx(float(np.dot(vec, qv)), abs=1e-5)


def test_hybrid_explains_both_ranks(linked: tuple[Memory, dict[str, str]]) -> None:
    m, ids = linked
    top = m.search("rye bread bakery", k=1, expand=False)[0]
    assert top.note.id == ids["other"]
    assert top.why.dense_rank == 1 and top.why.keyword_rank == 1
    assert "dense #1" in top.why.describe() and "keyword #1" in top.why.describe()


def test_keyword_only_match_is_found_by_hybrid_not_by_paper(tmp_path: Path) -> None:
    m = make_memory(tmp_path / "k.db")
    target = m.add("Order number ZX81-5523 shipped.")
    for i in range(30):
        m.add(f"Filler note number {i} about shipping orders and parcels.")
    hybrid = [h.note.id for h in m.search("ZX81", k=3, expand=False)]
    assert target.id in hybrid
    hit = next(h for h in m.search("ZX81", k=3, expand=False) if h.note.id == target.id)
    assert hit.why.keyword_rank == 1


def test_link_expansion_adds_neighbours_with_reason(linked: tuple[Memory, dict[str, str]]) -> None:
    m, ids = linked
    links = m.links(ids["trip"])
    assert len(links) == 1
    target = links[0].target_id
    hits = m.search("river trip next summer", k=1)
    assert hits[0].note.id == ids["trip"]
    expanded = [h for h in hits if h.why.via_link_from]
    assert [h.note.id for h in expanded] == [target]
    assert expanded[0].why.via_link_from == ids["trip"]
    assert expanded[0].why.link_reason == "the kayak for the trip"
    assert "linked from" in expanded[0].why.describe()
    assert [h.note.id for h in m.search("river trip next summer", k=1, expand=False)] == [ids["trip"]]


def test_token_budget_limits_expansion(linked: tuple[Memory, dict[str, str]]) -> None:
    m, _ = linked
    hits = m.search("river trip next summer", k=1, token_budget=1)
    assert len(hits) == 1  # top-k always returned; no room for neighbours


def test_paper_preset_is_dense_only_plus_links(linked: tuple[Memory, dict[str, str]]) -> None:
    m, _ = linked
    hits = m.search("river trip", k=2, preset="paper")
    assert all(h.why.keyword_rank is None for h in hits)
    assert all(h.why.dense_rank is not None or h.why.via_link_from for h in hits)


def test_time_and_metadata_filters_apply_to_results_and_expansion(
    linked: tuple[Memory, dict[str, str]],
) -> None:
    m, ids = linked
    after = Filters(event_after=datetime(2023, 5, 1, tzinfo=timezone.utc))
    assert {h.note.id for h in m.search("Sam kayak trip bread", k=5, filters=after)} == {ids["trip"]}
    by_topic = Filters(metadata={"topic": "travel"})
    assert {h.note.id for h in m.search("anything Sam", k=5, filters=by_topic)} == {ids["trip"]}


def test_bad_queries_are_refused(memory: Memory) -> None:
    for bad in ("", "   "):
        with pytest.raises(InvalidInput):
            memory.search(bad)
    with pytest.raises(InvalidInput):
        memory.search("x", k=0)
    with pytest.raises(InvalidInput):
        memory.search("x", preset="magic")


def test_search_on_empty_memory(memory: Memory) -> None:
    assert memory.search("anything") == []


def test_approx_tokens() -> None:
    assert approx_tokens("") == 1
    assert approx_tokens("abcd" * 10) == 10
