"""Upkeep rules with the fake LLM: duplicates, merges, link dynamics, forgetting, superseding, and that
every change consolidation makes can be undone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from amem import InvalidInput, Memory, NoteStatus, VersionCause
from amem.config import Settings
from amem.embed.fake import FakeEmbedder
from amem.llm.fake import FakeLLM
from amem.notes import Link, Note
from amem.steps import lifecycle

from .conftest import make_memory

LATER = datetime.now(timezone.utc) + timedelta(days=800)


def attrs(**extra: Any) -> dict[str, Any]:
    base = {"keywords": ["bike"], "tags": ["hobby"], "context": "Maya talks about her bike."}
    return {**base, **extra}


def same(why: str = "same fact") -> dict[str, str]:
    return {"verdict": "same", "why": why}


def links_of(memory: Memory, note_id: str) -> set[tuple[str, str]]:
    return {(lk.source_id, lk.target_id) for lk in memory.store.links_for([note_id])}


def state(memory: Memory) -> dict[str, Any]:
    """Everything a user sees of the memory, to compare before a run and after its undo."""
    notes = {n.id: n for n in memory.store.iter_notes(memory.scope)}
    return {
        nid: (
            n.content,
            n.keywords,
            n.tags,
            n.context,
            n.status,
            n.pinned,
            n.superseded_by,
            n.merged_into,
            n.sources,
            sorted(
                (lk.source_id, lk.target_id) for lk in memory.store.links_for([nid]) if lk.source_id == nid
            ),
        )
        for nid, n in notes.items()
    }


@pytest.fixture(params=["sqlite", "postgres"])
def memory(request: pytest.FixtureRequest, tmp_path: Path, fake_llm: FakeLLM) -> Iterator[Memory]:
    """Every rule on both stores (PostgreSQL: a real server, see conftest)."""
    if request.param == "sqlite":
        m = make_memory(tmp_path / "memory.db", llm=fake_llm)
    else:
        settings = Settings.resolve({"home": tmp_path, "llm": "fake", "embedder": "fake"})
        url = request.getfixturevalue("pg_url")
        m = Memory(store=url, llm=fake_llm, embedder=FakeEmbedder(64), settings=settings)
    yield m
    m.close()


@pytest.fixture
def plain(memory: Memory) -> Memory:
    """No LLM: notes are stored pending, nothing is linked (links are added by hand in tests)."""
    memory.settings = replace(memory.settings, llm="none")
    memory._llm = None
    return memory


# -- exact duplicates ------------------------------------------------------------------------------
def test_exact_duplicate_is_caught_at_write_time_without_an_llm(memory: Memory, fake_llm: FakeLLM) -> None:
    first = memory.add("Maya: I bought a red bike.", metadata={"dia_id": "D1:1"})
    calls = len(fake_llm.calls)
    again = memory.add("  maya:   I BOUGHT a red bike. ", metadata={"dia_id": "D4:2"})
    assert again.id == first.id and len(fake_llm.calls) == calls  # no new note, no LLM call
    assert memory.count() == 1
    assert [s["metadata"] for s in again.sources] == [{"dia_id": "D4:2"}]
    assert [m.get("dia_id") for m in again.all_metadata()] == ["D1:1", "D4:2"]
    assert memory.history(first.id)[-1].cause == VersionCause.duplicate
    # the very same write again changes nothing
    assert memory.add("Maya: I bought a red bike.", metadata={"dia_id": "D4:2"}).version == again.version
    # another scope is another memory
    other = memory.scoped(user_id="someone-else").add("Maya: I bought a red bike.")
    assert other.id != first.id


def test_add_many_folds_duplicates_within_the_batch_and_against_the_store(memory: Memory) -> None:
    memory.add("Tea is ready.", metadata={"n": 0})
    notes = memory.add_many(
        [
            {"content": "Tea is ready.", "metadata": {"n": 1}},
            {"content": "The train leaves at nine.", "metadata": {"n": 2}},
            {"content": "the train leaves at nine.", "metadata": {"n": 3}},
        ]
    )
    assert memory.count() == 2
    assert len(notes) == 3 and notes[2].id == notes[1].id
    assert [m["n"] for m in notes[2].all_metadata()] == [2, 3]


def test_dedupe_can_be_turned_off(memory: Memory) -> None:
    memory.settings = replace(memory.settings, dedupe=False)
    memory.add("same words")
    memory.add("same words")
    assert memory.count() == 2


def test_consolidation_merges_exact_duplicates_already_stored(plain: Memory) -> None:
    plain.settings = replace(plain.settings, **{"dedupe": False})
    a = plain.add("Caroline went hiking.", metadata={"dia_id": "D1:3"})
    b = plain.add("caroline went HIKING.", metadata={"dia_id": "D2:8"})
    report = plain.consolidate()
    assert [(c.kind, c.note_id, c.other_id) for c in report.changes] == [("merge", b.id, a.id)]
    survivor, absorbed = plain.get(a.id), plain.get(b.id)
    assert absorbed.status == NoteStatus.merged and absorbed.merged_into == a.id
    assert [m.get("dia_id") for m in survivor.all_metadata()] == ["D1:3", "D2:8"]
    assert [h.note.id for h in plain.search("hiking", track=False)] == [a.id]


# -- near duplicates -------------------------------------------------------------------------------
def test_near_duplicates_merge_only_when_the_llm_confirms(memory: Memory, fake_llm: FakeLLM) -> None:
    a = memory.add("Maya: I love my new red bike!", metadata={"dia_id": "D1:1"})
    b = memory.add("Maya: I love my new red bike!!!", metadata={"dia_id": "D2:5"})
    x = memory.add("Tom: what colour is the bike Maya loves?")
    memory.link(x.id, b.id, "asks about it")
    memory.link(b.id, x.id, "answered")
    assert memory.consolidate(use_llm=False).unconfirmed >= 1  # no LLM: nothing merged
    assert memory.get(b.id).status == NoteStatus.active

    fake_llm.script = [same()]
    report = memory.consolidate(full=True)
    assert report.count("merge") == 1 and report.judged == 1
    survivor, absorbed = memory.get(a.id), memory.get(b.id)
    assert absorbed.status == NoteStatus.merged and absorbed.merged_into == a.id
    assert survivor.sources[0]["note_id"] == b.id and survivor.sources[0]["content"] == b.content
    assert (x.id, a.id) in links_of(memory, a.id) and (a.id, x.id) in links_of(memory, a.id)
    assert not links_of(memory, b.id)  # every link re-pointed
    assert [v.cause for v in memory.history(b.id)][-1] == VersionCause.merge  # readable in history
    assert b.id not in {h.note.id for h in memory.search("red bike", k=10, track=False)}
    assert b.id in {h.note.id for h in memory.search("red bike", k=10, include_archived=True, track=False)}


def test_a_pair_the_llm_calls_different_stays_apart(memory: Memory, fake_llm: FakeLLM) -> None:
    a = memory.add("Maya: I love my new red bike!")
    b = memory.add("Maya: I love my new red bike!!!")
    fake_llm.script = [{"verdict": "different", "why": "two occasions"}]
    report = memory.consolidate()
    assert report.judged == 1 and not report.changes
    assert memory.get(a.id).status == memory.get(b.id).status == NoteStatus.active


def test_a_failed_llm_call_never_merges(memory: Memory, fake_llm: FakeLLM) -> None:
    from amem.errors import LLMUnavailable

    memory.add("Maya: I love my new red bike!")
    memory.add("Maya: I love my new red bike!!!")
    fake_llm.script = [LLMUnavailable("down"), LLMUnavailable("down")]
    report = memory.consolidate()
    assert report.count("merge") == 0 and report.unconfirmed == 1


# -- link dynamics ---------------------------------------------------------------------------------
def test_links_decay_with_disuse_and_grow_with_use() -> None:
    now = datetime.now(timezone.utc)
    link = Link(source_id="a", target_id="b", updated_at=now - timedelta(days=90))
    assert link.effective_weight(now, 90) == pytest.approx(0.5)
    assert link.effective_weight(now, 0) == 1.0  # decay off
    policy = lifecycle.Policy()
    grown = lifecycle.strengthened(link, 3, now, policy, lifecycle.CO_RETRIEVAL_STEP)
    assert grown.weight == pytest.approx(0.8) and grown.updated_at == now
    many = lifecycle.strengthened(link, 1000, now, policy, lifecycle.CO_RETRIEVAL_STEP)
    assert many.weight == lifecycle.MAX_LINK_WEIGHT


def test_co_retrieval_strengthens_a_link_and_counts_retrievals(plain: Memory) -> None:
    a = plain.add("kayak trip on the lake")
    b = plain.add("kayak paddles bought")
    plain.link(a.id, b.id, "same kayak")
    hits = plain.search("kayak", k=2)
    assert {h.note.id for h in hits} == {a.id, b.id}
    plain.flush_usage()
    link = plain.store.links_for([a.id])[0]
    assert link.weight == pytest.approx(1.0 + lifecycle.CO_RETRIEVAL_STEP, abs=1e-3)
    assert plain.get(a.id).retrievals == 1 and plain.get(a.id).last_retrieved_at is not None
    plain.search("kayak", k=2, track=False)
    plain.flush_usage()
    assert plain.get(a.id).retrievals == 1  # untracked searches leave no trace


def test_llm_reconfirming_a_link_strengthens_it(memory: Memory, fake_llm: FakeLLM) -> None:
    old = memory.add("Maya: the marathon is in Berlin.")
    fake_llm.script = [attrs(links=[{"to": "N1", "why": "same marathon"}])]
    new = memory.add("Maya: I run the Berlin marathon in May.")
    assert memory.links(new.id)[0].weight == 1.0
    memory.update(new.id, content="Maya: I run the Berlin marathon in late May.")  # pending again
    fake_llm.script = [attrs(links=[{"to": "N1", "why": "same marathon"}])]
    memory.enrich()
    weights = [lk.weight for lk in memory.links(new.id) if lk.target_id == old.id]
    assert weights == [pytest.approx(1.0 + lifecycle.CONFIRM_STEP, abs=1e-3)]


def test_expansion_follows_the_stronger_decayed_link(plain: Memory) -> None:
    hub = plain.add("garden plans for spring")
    fresh = plain.add("tulip bulbs")
    stale = plain.add("rose cuttings")
    old = datetime.now(timezone.utc) - timedelta(days=400)
    plain.store.upsert_links(
        [
            Link(source_id=hub.id, target_id=stale.id, weight=2.0, created_at=old, updated_at=old),
            Link(source_id=hub.id, target_id=fresh.id, weight=1.0),
        ]
    )
    hits = plain.search("garden plans spring", k=1, track=False)
    linked = [h for h in hits if h.why.via_link_from == hub.id]
    assert linked[0].note.id == fresh.id  # 2.0 halved 4.4 times is weaker than a fresh 1.0
    assert linked[1].why.link_weight is not None and linked[1].why.link_weight < 0.2


def test_decayed_links_are_pruned_and_the_version_brings_them_back(plain: Memory) -> None:
    a = plain.add("the old fishing boat")
    b = plain.add("repairing the boat engine")
    plain.link(a.id, b.id, "same boat")
    version_before = plain.get(a.id).version
    report = plain.consolidate(as_of=LATER)
    assert [(c.kind, c.note_id, c.other_id) for c in report.changes if c.kind == "prune"] == [
        ("prune", a.id, b.id)
    ]
    assert not links_of(plain, a.id)
    assert VersionCause.prune in [v.cause for v in plain.history(a.id)]  # then archived, unused for years
    assert plain.restore(a.id, version_before).status == NoteStatus.active
    restored = plain.store.links_for([a.id])
    assert [(lk.source_id, lk.target_id, lk.reason) for lk in restored] == [(a.id, b.id, "same boat")]


# -- forgetting ------------------------------------------------------------------------------------
def test_importance_rises_with_use_links_and_recency() -> None:
    now = datetime.now(timezone.utc)
    policy = lifecycle.Policy()
    old = Note(content="x", ingest_time=now - timedelta(days=365), updated_at=now - timedelta(days=365))
    base = lifecycle.importance(old, 0, now, policy)
    assert lifecycle.importance(old.model_copy(update={"retrievals": 5}), 0, now, policy) > base
    assert lifecycle.importance(old, 3, now, policy) > base
    assert lifecycle.importance(old.model_copy(update={"last_retrieved_at": now}), 0, now, policy) > base
    assert base < policy.archive_below  # a year untouched, unused, unlinked: forgotten
    assert lifecycle.archive_reason(old, 0, now, policy) is not None
    assert lifecycle.archive_reason(old.model_copy(update={"pinned": True}), 0, now, policy) is None
    young = Note(content="y", ingest_time=now - timedelta(days=5))
    assert lifecycle.archive_reason(young, 0, now + timedelta(days=400), policy) is not None
    assert lifecycle.archive_reason(young, 0, now, policy) is None


def test_forgotten_notes_are_archived_not_deleted_and_pins_protect(plain: Memory) -> None:
    forgotten = plain.add("a parking ticket from years ago")
    pinned = plain.add("my passport number is in the blue folder", pinned=True)
    expired_pin = plain.add("door code 4471 this week", pinned=True, expires_at=datetime.now(timezone.utc))
    report = plain.consolidate(as_of=LATER)
    archived = {c.note_id for c in report.changes if c.kind == "archive"}
    assert forgotten.id in archived and pinned.id not in archived and expired_pin.id not in archived
    assert plain.get(forgotten.id).status == NoteStatus.archived  # kept and readable
    assert forgotten.id not in {h.note.id for h in plain.search("parking ticket", track=False)}
    assert plain.unarchive(forgotten.id).status == NoteStatus.active
    assert forgotten.id in {h.note.id for h in plain.search("parking ticket", track=False)}
    with pytest.raises(InvalidInput, match="pinned"):
        plain.archive(pinned.id)


def test_expiry_archives_at_the_next_consolidation(plain: Memory) -> None:
    soon = datetime.now(timezone.utc) + timedelta(hours=1)
    note = plain.add("the meeting room is B12 today", expires_at=soon)
    assert plain.consolidate().count("archive") == 0
    report = plain.consolidate(as_of=soon + timedelta(minutes=1))
    assert next(c.detail for c in report.changes if c.note_id == note.id).startswith("expired")
    assert plain.get(note.id).status == NoteStatus.archived


def test_pin_and_archive_by_hand_are_versions(plain: Memory) -> None:
    note = plain.add("remember the blue folder")
    plain.pin(note.id)
    plain.pin(note.id, False)
    plain.archive(note.id)
    causes = [v.cause for v in plain.history(note.id)]
    assert causes[-3:] == [VersionCause.pin, VersionCause.pin, VersionCause.archive]
    assert plain.restore(note.id, 1).status == NoteStatus.active


# -- superseding -----------------------------------------------------------------------------------
def test_a_new_note_that_replaces_a_fact_supersedes_it(memory: Memory, fake_llm: FakeLLM) -> None:
    old = memory.add("Maya works at the bakery on Elm Street.")
    fake_llm.script = [attrs(supersedes=["N1"], links=[])]
    new = memory.add("Maya works at the library now, not at the bakery on Elm Street.")
    stale = memory.get(old.id)
    assert stale.superseded_by == new.id and stale.status == NoteStatus.active  # history keeps both
    assert memory.history(old.id)[-1].cause == VersionCause.supersede
    assert (old.id, new.id) in links_of(memory, old.id)
    hits = memory.search("Where does Maya work? bakery Elm Street", k=1, track=False)
    assert [h.note.id for h in hits][:2] == [new.id, old.id]  # the current fact first, then the older


def test_a_note_never_supersedes_another_speakers_note(memory: Memory, fake_llm: FakeLLM) -> None:
    old = memory.add("Gina: I work at the bakery on Elm Street.", metadata={"speaker": "Gina"})
    fake_llm.script = [attrs(context="Jon works at the bakery on Elm Street.", supersedes=["N1"], links=[])]
    memory.add("Jon: I work at the bakery on Elm Street now, too.", metadata={"speaker": "Jon"})
    assert "supersedes" in str(fake_llm.calls[-1][1])  # offered (close enough), then refused
    assert memory.get(old.id).superseded_by is None


def test_supersedes_is_ignored_for_notes_not_offered_as_updatable(memory: Memory, fake_llm: FakeLLM) -> None:
    old = memory.add("completely unrelated words about turtles")
    fake_llm.script = [attrs(supersedes=["N1"])]
    memory.add("Maya works at the library now")
    assert memory.get(old.id).superseded_by is None


def test_consolidation_reports_an_update_found_between_near_duplicates(
    memory: Memory, fake_llm: FakeLLM
) -> None:
    old = memory.add("Maya: my phone number is 555 0101.")
    new = memory.add("Maya: my phone number is 555 0199.")
    memory.settings = replace(memory.settings, **{"merge_similarity": 0.5})
    fake_llm.script = [
        {"verdict": "updates", "old_fact": "number 555 0101", "new_fact": "number 555 0199", "why": "new"}
    ]
    report = memory.consolidate()
    assert report.updates_left == 1 and not report.changes  # reported; superseding is evolution's job
    assert memory.get(old.id).superseded_by is None and new.superseded_by is None


@pytest.mark.parametrize(
    "answer",
    [
        {"verdict": "updates", "old_fact": "", "new_fact": "", "why": "changed"},  # no evidence
        {"verdict": "updates", "old_fact": "lives in Rome", "new_fact": "lives in Oslo", "why": "moved"},
        {"verdict": "updates", "old_fact": "tea time", "new_fact": "tea time", "why": "same thing"},
    ],
)
def test_an_update_without_grounded_changed_evidence_counts_as_different(
    memory: Memory, fake_llm: FakeLLM, answer: dict[str, str]
) -> None:
    old = memory.add("Maya: thanks for the tea time, Tom!")
    memory.add("Maya: thanks for the lovely tea time, Tom!!")
    memory.settings = replace(memory.settings, merge_similarity=0.5)
    fake_llm.script = [answer]
    report = memory.consolidate()
    assert report.judged == 1 and not report.changes
    assert memory.get(old.id).superseded_by is None


def test_notes_of_different_speakers_are_never_merged(memory: Memory, fake_llm: FakeLLM) -> None:
    memory.add("Thanks, you are the best!", metadata={"speaker": "Jon"})
    memory.add("Thanks, you are the best!!", metadata={"speaker": "Gina"})
    fake_llm.script = [same()]
    report = memory.consolidate()
    assert report.judged == 0 and not report.changes


# -- runs: dry run, versions, undo -----------------------------------------------------------------
def _busy_memory(memory: Memory) -> dict[str, Note]:
    memory.settings = replace(memory.settings, **{"dedupe": False})
    notes = {
        "a": memory.add("Maya: I love my new red bike!"),
        "b": memory.add("Maya: I love my new red bike!!!"),
        "c": memory.add("Maya: I love my new red bike!"),  # exact duplicate of a
        "d": memory.add("an old receipt for batteries"),
        "e": memory.add("Maya: I sold the red bike to Tom."),
        "f": memory.add("garden gnome", pinned=True),
    }
    memory.link(notes["e"].id, notes["b"].id, "same bike")
    memory.link(notes["b"].id, notes["d"].id, "bought with")
    memory.link(notes["d"].id, notes["f"].id, "weak")
    return notes


def test_dry_run_reports_the_changes_and_writes_nothing(memory: Memory, fake_llm: FakeLLM) -> None:
    _busy_memory(memory)
    before = state(memory)
    versions = memory.store.stats()["versions"]
    fake_llm.handler = lambda messages, schema: same() if "OLDER" in messages[-1].content else attrs()
    dry = memory.consolidate(dry_run=True, as_of=LATER)
    assert state(memory) == before and memory.store.stats()["versions"] == versions
    real = memory.consolidate(as_of=LATER)
    assert sorted((c.kind, c.note_id) for c in dry.changes) == sorted(
        (c.kind, c.note_id) for c in real.changes
    )
    assert {c.kind for c in real.changes} >= {"merge", "prune", "archive"}


def test_every_change_of_a_run_is_a_version_and_undo_puts_everything_back(
    memory: Memory, fake_llm: FakeLLM
) -> None:
    notes = _busy_memory(memory)
    before = state(memory)
    fake_llm.handler = lambda messages, schema: same() if "OLDER" in messages[-1].content else attrs()
    report = memory.consolidate(as_of=LATER)
    assert report.count("merge") == 2 and report.count("prune") >= 1 and report.count("archive") >= 1
    changed = {v.note_id for v in memory.store.versions_in_batch(report.run_id)}
    assert {c.note_id for c in report.changes} <= changed
    assert notes["f"].id not in {c.note_id for c in report.changes if c.kind == "archive"}  # pinned
    assert state(memory) != before
    undone = memory.undo_consolidation(report.run_id)
    assert not undone.skipped and set(undone.restored) == changed
    assert state(memory) == before
    with pytest.raises(Exception, match="no consolidation run"):
        memory.undo_consolidation("c-nope")


def test_undo_leaves_notes_changed_after_the_run_unless_forced(plain: Memory) -> None:
    note = plain.add("an unused note")
    report = plain.consolidate(as_of=LATER)
    assert plain.get(note.id).status == NoteStatus.archived
    plain.update(note.id, context="edited after the run")
    undone = plain.undo_consolidation(report.run_id)
    assert undone.skipped == [note.id] and plain.get(note.id).status == NoteStatus.archived
    plain.undo_consolidation(report.run_id, force=True)
    assert plain.get(note.id).status == NoteStatus.active


def test_second_run_only_rechecks_notes_changed_since(memory: Memory, fake_llm: FakeLLM) -> None:
    memory.add("Maya: I love my new red bike!")
    memory.add("Maya: I love my new red bike!!!")
    memory.consolidate()  # the fake says "different" by default
    judged = memory.consolidate().judged
    assert judged == 0  # nothing changed since: the pair is not asked about again
    assert memory.consolidate(full=True).judged == 1


def test_archived_notes_are_not_offered_as_neighbours_to_new_notes(memory: Memory, fake_llm: FakeLLM) -> None:
    old = memory.add("the blue kayak on the lake")
    memory.archive(old.id)
    memory.add("the blue kayak on the lake again today")
    assert "blue kayak" not in fake_llm.calls[-1][0][-1].content.split("NEW NOTE")[0]


def test_undo_refuses_a_run_from_a_narrower_scope(plain: Memory) -> None:
    note = plain.scoped(user_id="ann").add("an unused note of ann's")
    report = plain.consolidate(as_of=LATER)  # the whole memory
    with pytest.raises(Exception, match="in this scope"):
        plain.scoped(user_id="bob").undo_consolidation(report.run_id)
    plain.undo_consolidation(report.run_id)
    assert plain.get(note.id).status == NoteStatus.active


def test_a_note_added_in_a_batch_can_supersede_an_older_one(memory: Memory, fake_llm: FakeLLM) -> None:
    old = memory.add("Maya works at the bakery on Elm Street.")

    def entry(alias: str, supersedes: list[str]) -> dict[str, Any]:
        return {"note": alias, "keywords": ["bakery"], "tags": ["work"], "context": "Someone at the bakery.",
                "links": [], "supersedes": supersedes}  # fmt: skip

    fake_llm.script = [{"notes": [entry("T1", []), entry("T2", ["N1"])], "updates": []}]
    notes = memory.add_many(
        [
            "Tom bought bread at the bakery.",
            "Maya works at the library now, not at the bakery on Elm Street.",
        ],
        batch_size=2,
    )
    assert "supersedes" in str(fake_llm.calls[-1][1])  # offered: the old note was UPDATABLE
    assert memory.get(old.id).superseded_by == notes[1].id
