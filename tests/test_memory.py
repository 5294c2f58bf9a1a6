"""The write pipeline end to end with the fake LLM: construction, links, evolution, failures, scopes."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from amem import MAX_CONTENT_CHARS, EnrichState, Filters, InvalidInput, Memory, NotFound, VersionCause
from amem.errors import LLMUnavailable
from amem.llm.base import Message
from amem.llm.fake import FakeLLM
from amem.prompts import note as note_prompt

from .conftest import make_memory


def attrs(**extra: Any) -> dict[str, Any]:
    base = {"keywords": ["marathon", "training"], "tags": ["sport"], "context": "Maya trains for a marathon."}
    return {**base, **extra}


def batch_entry(alias: str, links: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """One note of a scripted batch answer."""
    return {
        "note": alias,
        "keywords": [alias.lower()],
        "tags": ["t"],
        "context": f"Context of note {alias}.",
        "links": links or [],
    }


def prompt_of(llm: FakeLLM, i: int = -1) -> str:
    return llm.calls[i][0][-1].content


def test_add_writes_attributes_version_and_call_record(memory: Memory, fake_llm: FakeLLM) -> None:
    fake_llm.script = [attrs()]
    note = memory.add(
        "Maya: I signed up for the Berlin marathon and started training.", metadata={"speaker": "Maya"}
    )
    assert note.state == EnrichState.enriched
    assert note.keywords == ["marathon", "training"] and note.tags == ["sport"]
    assert note.context == "Maya trains for a marathon."
    assert note.embedding_model == "fake:64" and len(note.content_hash) == 64
    history = memory.history(note.id)
    assert [(v.version, v.cause) for v in history] == [(1, VersionCause.create)]
    calls = memory.llm_calls(note.id)
    assert len(calls) == 1 and calls[0].step == "construct" and calls[0].prompt_version == note_prompt.VERSION
    assert calls[0].input_tokens > 0 and calls[0].output_tokens > 0
    assert history[0].llm_call_id == calls[0].id


def test_one_call_per_note_by_default(memory: Memory, fake_llm: FakeLLM) -> None:
    for text in ["alpha beta", "alpha gamma", "alpha delta"]:
        memory.add(text)
    assert len(fake_llm.calls) == 3


def test_links_map_aliases_to_stable_ids(memory: Memory, fake_llm: FakeLLM) -> None:
    first = memory.add("Maya: I run along the canal with my dog Pretzel.")
    fake_llm.script = [
        attrs(
            keywords=["Pretzel", "canal"],
            context="Maya says Pretzel the dog loves the canal runs.",
            links=[{"to": "N1", "why": "same dog"}],
        )
    ]
    second = memory.add("Maya: Pretzel the dog loves the canal runs.")
    links = memory.links(second.id)
    assert [(lk.source_id, lk.target_id, lk.reason) for lk in links] == [(second.id, first.id, "same dog")]
    assert "N1 [" in prompt_of(fake_llm)  # the neighbour was shown under its alias, not its id
    assert first.id not in prompt_of(fake_llm)


def test_unknown_aliases_and_copied_example_aliases_are_dropped(memory: Memory, fake_llm: FakeLLM) -> None:
    memory.add("Maya runs with Pretzel the dog.")
    fake_llm.script = [
        attrs(
            links=[
                {"to": "R1", "why": "copied from the example"},
                {"to": "N9", "why": "made up"},
                {"to": "0", "why": "rank"},
            ],
            updates=[{"note": "R1", "context": "hijacked context sentence", "tags": ["x"]}],
        )
    ]
    note = memory.add("Pretzel the dog ran with Maya again.")
    assert note.state == EnrichState.enriched
    assert memory.links(note.id) == []
    assert all(n.version == 1 for n in memory.list())


def test_evolution_updates_neighbour_with_new_version_and_fresh_index(tmp_path: Path) -> None:
    fake_llm = FakeLLM()
    memory = make_memory(tmp_path / "m.db", llm=fake_llm, evolve_floor=0.0, link_floor=-1.0)
    old = memory.add("Maya: I signed up for the Berlin marathon in September.")
    fake_llm.script = [
        attrs(
            links=[{"to": "N1", "why": "same marathon"}],
            updates=[
                {
                    "note": "N1",
                    "context": "Maya signed up for the Berlin marathon; a zebracorn injury puts it at risk.",
                    "tags": ["sport", "injury"],
                }
            ],
        )
    ]
    new = memory.add(
        "Maya: I twisted my ankle (zebracorn injury); no running for three weeks, the marathon is at risk."
    )
    evolved = memory.get(old.id)
    assert (
        evolved.version == 2 and "zebracorn" in evolved.context and evolved.tags[-2:] == ["sport", "injury"]
    )
    assert evolved.content == old.content  # evolution never rewrites content
    history = memory.history(old.id)
    assert [v.cause for v in history] == [VersionCause.create, VersionCause.evolve]
    assert history[0].context == old.context  # the old version stays readable
    assert history[1].llm_call_id == memory.llm_calls(new.id)[0].id
    assert new.id in history[1].detail
    # both indexes were refreshed in the same transaction
    assert old.id in {h.note.id for h in memory.search("zebracorn", k=2, expand=False)}
    assert old.id in {i for i, _ in memory.store.keyword("zebracorn", 5, memory.scope)}


def test_evolution_is_not_offered_below_the_similarity_floor(tmp_path: Path) -> None:
    llm = FakeLLM()
    m = make_memory(tmp_path / "m.db", llm=llm, evolve_floor=0.99, link_floor=-1.0)
    m.add("Maya likes running marathons.")
    llm.script = [
        attrs(
            keywords=["Lisbon"],
            context="Jonas moved to Lisbon for a new job.",
            updates=[{"note": "N1", "context": "should never be applied here", "tags": ["x"]}],
        )
    ]
    m.add("Jonas moved to Lisbon for a new job.")
    prompt, schema = llm.calls[-1]
    assert "UPDATABLE: none" in prompt[-1].content
    assert schema is not None and "updates" not in schema["properties"]
    assert all(n.version == 1 for n in m.list())


def test_first_note_has_no_neighbours_in_prompt_or_schema(memory: Memory, fake_llm: FakeLLM) -> None:
    memory.add("The very first memory.")
    prompt, schema = fake_llm.calls[0]
    assert "RELATED NOTES: none" in prompt[-1].content
    assert schema is not None and set(schema["properties"]) == {"keywords", "tags", "context"}


def test_relative_time_and_event_date_reach_the_llm(memory: Memory, fake_llm: FakeLLM) -> None:
    memory.add("Caroline: I went to a support group yesterday.", event_time=datetime(2023, 5, 8, 13, 56))
    assert "[8 May 2023 (Monday)]" in prompt_of(fake_llm)
    note = memory.list()[0]
    assert note.event_time == datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)
    assert "8 May 2023" in note.embedding_text()  # the date is indexed too


def test_garbage_then_valid_answer_uses_one_repair_retry(memory: Memory, fake_llm: FakeLLM) -> None:
    fake_llm.script = ["Sure! Here are keywords: marathon", attrs()]
    note = memory.add("Maya runs.")
    assert note.state == EnrichState.enriched
    call = memory.llm_calls(note.id)[0]
    assert call.attempts == 2 and call.ok
    repair = fake_llm.calls[1][0]
    assert repair[-1].role == "user" and "not usable" in repair[-1].content


@pytest.mark.parametrize(
    "answers",
    [
        [LLMUnavailable("connection refused")],
        ["not json", "still not json"],
        [{"keywords": [], "tags": [], "context": ""}, {"keywords": ["  "], "tags": ['""'], "context": " "}],
    ],
    ids=["unreachable", "garbage", "empty-fields"],
)
def test_llm_failure_keeps_note_pending_and_searchable(
    memory: Memory, fake_llm: FakeLLM, answers: list[Any]
) -> None:
    fake_llm.script = list(answers)
    note = memory.add("Jonas accepted the Lisbon job offer.")
    assert note.state == EnrichState.pending
    assert note.keywords == [] and note.context == ""  # no invented defaults
    assert note.last_error
    stored = memory.get(note.id)
    assert stored.content == "Jonas accepted the Lisbon job offer."
    assert memory.search("Lisbon job", k=1)[0].note.id == note.id
    failed = memory.llm_calls(note.id)[-1]
    assert not failed.ok and failed.error
    # later the LLM works again: enrich completes it
    report = memory.enrich()
    assert report.enriched == 1
    done = memory.get(note.id)
    assert done.state == EnrichState.enriched and done.keywords and done.version == 2
    assert [v.cause for v in memory.history(note.id)] == [VersionCause.create, VersionCause.enrich]


def test_repeated_failures_mark_note_failed_not_lost(memory: Memory, fake_llm: FakeLLM) -> None:
    fake_llm.script = ["not json"] * 6  # three unusable answers, each after its repair re-prompt
    note = memory.add("Important fact.")
    memory.enrich()
    memory.enrich()
    stored = memory.get(note.id)
    assert stored.state == EnrichState.failed and stored.enrich_attempts == 3
    assert memory.enrich().enriched == 0  # failed notes wait for --include-failed
    assert memory.enrich(include_failed=True).enriched == 1


def test_provider_bug_is_recorded_not_raised(memory: Memory, fake_llm: FakeLLM) -> None:
    fake_llm.script = [RuntimeError("provider bug")]
    note = memory.add("Something to keep.")
    assert note.state == EnrichState.pending and "provider bug" in (note.last_error or "")


@pytest.mark.parametrize("content", ["", "   \n\t ", "x" * (MAX_CONTENT_CHARS + 1), "nul\x00byte"])
def test_invalid_content_is_refused_and_nothing_changes(memory: Memory, content: str) -> None:
    memory.add("existing note")
    with pytest.raises(InvalidInput):
        memory.add(content)
    assert memory.count() == 1


def test_add_many_validates_everything_before_storing(memory: Memory) -> None:
    with pytest.raises(InvalidInput):
        memory.add_many(["fine", "", "also fine"])
    assert memory.count() == 0


def test_add_many_batches_notes_per_call(memory: Memory, fake_llm: FakeLLM) -> None:
    notes = memory.add_many([f"turn {i} about gardening tomatoes" for i in range(8)], batch_size=4)
    assert len(fake_llm.calls) == 2
    assert all(n.state == EnrichState.enriched for n in notes)
    assert [c.step for c in memory.llm_calls()] == ["construct_batch", "construct_batch"]
    second_prompt = prompt_of(fake_llm, 1)
    assert "T1 [" in second_prompt and "RELATED NOTES:" in second_prompt


def test_batch_notes_left_out_get_their_own_call(memory: Memory, fake_llm: FakeLLM) -> None:
    fake_llm.script = [{"notes": [batch_entry("T1")]}]
    notes = memory.add_many(["first thing in context of note T1", "second thing"], batch_size=2)
    assert [n.state for n in notes] == [EnrichState.enriched, EnrichState.enriched]
    assert [c.step for c in memory.llm_calls()] == ["construct_batch", "construct"]


def test_batch_links_between_new_notes(memory: Memory, fake_llm: FakeLLM) -> None:
    fake_llm.script = [
        {
            "notes": [
                batch_entry("T1", [{"to": "T2", "why": "the same forward question"}]),
                batch_entry("T2", [{"to": "T1", "why": "a forward question"}, {"to": "T2", "why": "self"}]),
            ]
        }
    ]
    a, b = memory.add_many(
        [
            "t1 asks a forward question, context of note T1",
            "t2 gives a reply to the forward question, context of note T2",
        ],
        batch_size=2,
    )
    pairs = {(lk.source_id, lk.target_id, lk.reason) for lk in memory.links(a.id)}
    assert pairs == {(a.id, b.id, "the same forward question"), (b.id, a.id, "a forward question")}


def test_paper_pipeline_makes_two_calls_and_maps_positions_safely(tmp_path: Path) -> None:
    llm = FakeLLM()
    m = make_memory(tmp_path / "p.db", llm=llm, pipeline="paper", evolve_floor=0.0)
    first = m.add("Maya signed up for the Berlin marathon.")
    assert [c.step for c in m.llm_calls()] == ["analyse"]  # no neighbours: no evolution call
    llm.script = [
        attrs(context="Maya twisted her ankle before the marathon."),
        {
            "should_evolve": True,
            "actions": ["strengthen", "update_neighbor"],
            "suggested_connections": ["P1", "N1"],
            "tags_to_update": ["sport", "injury"],
            "new_context_neighborhood": [
                "Maya signed up for the Berlin marathon, at risk after she twisted her ankle."
            ],
            "new_tags_neighborhood": [["sport", "plans"]],
        },
    ]
    second = m.add("Maya twisted her ankle before the marathon.")
    assert [c.step for c in m.llm_calls()][-2:] == ["analyse", "evolve"]
    assert [(lk.target_id, lk.reason) for lk in m.links(second.id)] == [
        (first.id, "both mention Maya, marathon")
    ]
    assert m.get(second.id).tags == ["sport", "injury"]
    assert m.get(first.id).version == 2 and "ankle" in m.get(first.id).context


def test_paper_pipeline_misaligned_lists_are_not_applied(tmp_path: Path) -> None:
    llm = FakeLLM()
    m = make_memory(tmp_path / "p.db", llm=llm, pipeline="paper", evolve_floor=0.0)
    first = m.add("note one about cats")
    llm.script = [
        attrs(),
        {
            "should_evolve": True,
            "actions": ["update_neighbor"],
            "suggested_connections": [],
            "tags_to_update": [],
            "new_context_neighborhood": ["a", "b", "c"],
            "new_tags_neighborhood": [],
        },
    ]
    m.add("note two about cats")
    assert m.get(first.id).version == 1


def test_scopes_never_mix_for_reads_links_or_evolution(tmp_path: Path) -> None:
    llm = FakeLLM()
    base = make_memory(tmp_path / "s.db", llm=llm)
    alice, bob = base.scoped(user_id="alice"), base.scoped(user_id="bob")
    secret = alice.add("Alice's bank PIN hint is the dog's birthday.")
    llm.script = [
        attrs(
            links=[{"to": "N1", "why": "x"}], updates=[{"note": "N1", "context": "pwned context", "tags": []}]
        )
    ]
    bob_note = bob.add("Bob's dog has a birthday party.")
    assert "bank PIN" not in prompt_of(llm)  # alice's note was never offered to bob's write
    assert bob.links(bob_note.id) == []
    assert alice.get(secret.id).version == 1
    assert [h.note.id for h in bob.search("bank PIN dog birthday", k=10)] == [bob_note.id]
    with pytest.raises(NotFound):
        bob.get(secret.id)
    with pytest.raises(NotFound):
        bob.delete(secret.id)
    with pytest.raises(NotFound):
        bob.update(secret.id, context="changed")
    assert alice.count() == 1 and bob.count() == 1 and base.count() == 2


def test_update_writes_a_version_and_reindexes(memory: Memory) -> None:
    note = memory.add("The meeting is on Monday.")
    updated = memory.update(note.id, context="Rescheduled to quasarday.", tags=["work"])
    assert updated.version == 2 and updated.context == "Rescheduled to quasarday."
    assert [v.cause for v in memory.history(note.id)] == [VersionCause.create, VersionCause.update]
    assert memory.search("quasarday", k=1, expand=False)[0].note.id == note.id
    edited = memory.update(note.id, content="The meeting moved to Tuesday.")
    assert edited.state == EnrichState.pending  # attributes are stale until enrich rewrites them
    with pytest.raises(InvalidInput):
        memory.update(note.id)


def test_delete_removes_links_both_ways(memory: Memory, fake_llm: FakeLLM) -> None:
    a = memory.add("Pretzel is a beagle.")
    fake_llm.script = [attrs(links=[{"to": "N1", "why": "dog"}])]
    b = memory.add("Pretzel the beagle likes walks.")
    memory.delete(a.id)
    assert memory.links(b.id) == []
    with pytest.raises(NotFound):
        memory.get(a.id)
    with pytest.raises(NotFound):
        memory.history(a.id)


def test_cache_makes_a_rerun_free(tmp_path: Path) -> None:
    llm = FakeLLM()
    m = make_memory(tmp_path / "c.db", llm=llm)
    note = m.add("Cache me", event_time=datetime(2024, 1, 1))
    calls_before = len(llm.calls)
    m2 = make_memory(tmp_path / "c.db", llm=llm)
    m2.store.delete_note(note.id)
    m2.add("Cache me", event_time=datetime(2024, 1, 1))
    assert len(llm.calls) == calls_before
    assert m2.llm_calls()[-1].cached


def test_restart_keeps_everything(tmp_path: Path) -> None:
    llm = FakeLLM()
    m = make_memory(tmp_path / "r.db", llm=llm)
    a = m.add("First persistent note about kayaks.")
    llm.script = [
        attrs(context="A second persistent note about kayaks.", links=[{"to": "N1", "why": "kayaks"}])
    ]
    b = m.add("Second persistent note about kayaks.")
    m.close()
    m2 = make_memory(tmp_path / "r.db", llm=FakeLLM())
    assert m2.get(a.id) == a and m2.get(b.id).keywords == b.keywords
    assert len(m2.links(b.id)) == 1
    assert m2.search("kayaks", k=2, expand=False)[0].note.id in {a.id, b.id}
    assert len(m2.llm_calls()) == 2


def test_embedder_mismatch_is_refused(tmp_path: Path) -> None:
    from amem.embed.fake import FakeEmbedder

    m = make_memory(tmp_path / "e.db")
    m.add("hello")
    other = Memory(store=m.store, llm=FakeLLM(), embedder=FakeEmbedder(32), settings=m.settings)
    with pytest.raises(Exception, match="embedded with"):
        other.add("world")


def test_no_llm_mode_stores_pending(tmp_path: Path) -> None:
    from amem.embed.fake import FakeEmbedder

    m = Memory(store=str(tmp_path / "n.db"), llm="none", embedder=FakeEmbedder(16))
    note = m.add("stored without any LLM")
    assert note.state == EnrichState.pending and m.llm_calls() == []


def test_messages_are_plain_data() -> None:
    assert Message("user", "x").content == "x"


@pytest.mark.parametrize(
    "metadata", [{"x": float("nan")}, {"x": float("inf")}, {"bad key": 1}, {"k": object()}, {"": 1}]
)
def test_metadata_must_be_plain_filterable_json(memory: Memory, metadata: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        memory.add("text", metadata=metadata)
    assert memory.count() == 0


def test_stats_are_scoped(tmp_path: Path) -> None:
    base = make_memory(tmp_path / "st.db")
    base.scoped(user_id="alice").add("alice's note")
    bob = base.scoped(user_id="bob")
    assert bob.stats()["in_scope"]["notes"] == 0 and bob.stats()["notes"] == 1


def test_event_time_accepts_iso_strings_and_rejects_garbage(memory: Memory) -> None:
    note = memory.add("dated", event_time="2024-04-10T20:07:00Z")
    assert note.event_time == datetime(2024, 4, 10, 20, 7, tzinfo=timezone.utc)
    with pytest.raises(InvalidInput):
        memory.add("dated", event_time="last tuesday")


def test_threads_share_one_memory_without_losing_writes(tmp_path: Path) -> None:
    import threading

    m = make_memory(tmp_path / "t.db", link_floor=-1.0, evolve_floor=-1.0)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for i in range(15):
                m.add(f"worker {w} note {i} about shared garden tomatoes")
                m.search("garden tomatoes", k=3)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    notes = m.list(limit=100)
    assert len(notes) == 60 and len({n.content for n in notes}) == 60
    for n in notes:
        assert [v.version for v in m.history(n.id)] == list(range(1, n.version + 1))
        for link in m.links(n.id):
            assert m.get(link.source_id) and m.get(link.target_id)


def test_unreachable_llm_in_a_batch_costs_one_call(memory: Memory, fake_llm: FakeLLM) -> None:
    fake_llm.script = [LLMUnavailable("down")]
    notes = memory.add_many(["one thing", "another thing", "a third thing"], batch_size=3)
    assert [n.state for n in notes] == [EnrichState.pending] * 3
    assert len(fake_llm.calls) == 1
    assert memory.enrich().enriched == 3


def test_bad_batch_answer_falls_back_to_one_call_per_note(memory: Memory, fake_llm: FakeLLM) -> None:
    fake_llm.script = ["garbage", "more garbage"]
    notes = memory.add_many(["one thing", "another thing"], batch_size=2)
    assert [n.state for n in notes] == [EnrichState.enriched] * 2
    assert [c.step for c in memory.llm_calls()] == ["construct_batch", "construct", "construct"]


def test_enrich_never_overwrites_an_edit_made_while_the_llm_worked(tmp_path: Path) -> None:
    llm = FakeLLM(script=[LLMUnavailable("down")])
    m = make_memory(tmp_path / "m.db", llm=llm)
    note = m.add("Jonas works in Berlin.")
    assert note.state == EnrichState.pending

    def edit_during_call(messages: Any, schema: Any) -> dict[str, Any]:
        m.update(note.id, content="Jonas works in Lisbon now.")  # another writer, mid-call, every call
        return attrs(keywords=["Berlin"], context="Jonas works in Berlin.")

    llm.handler = edit_during_call
    m.enrich()  # tries the newer version once more; edited again meanwhile, it is left pending
    kept = m.get(note.id)
    assert kept.content == "Jonas works in Lisbon now."
    causes = [v.cause for v in m.history(note.id)]
    assert causes[0] == VersionCause.create and set(causes[1:]) == {VersionCause.update}  # no enrich
    assert kept.state == EnrichState.pending  # never the answer about the older text; the next enrich
    llm.handler = None
    m.enrich()
    assert m.get(note.id).state == EnrichState.enriched
    assert m.get(note.id).content == "Jonas works in Lisbon now."


def test_list_all_and_delete_all_stay_in_the_scope_and_the_filters(tmp_path: Path) -> None:
    alice = make_memory(tmp_path / "m.db", llm=None, user_id="alice")
    bob = alice.scoped(user_id="bob")
    for i in range(5):
        alice.add(f"Alice's note {i}", metadata={"session": "a" if i < 3 else "b"})
    bob.add("Bob's note", metadata={"session": "a"})
    assert len(alice.list_all(page=2)) == 5  # read two at a time, none skipped
    session_a = Filters(metadata={"session": "a"})
    assert alice.delete_all(session_a) == 3
    assert sorted(n.content for n in alice.list_all()) == ["Alice's note 3", "Alice's note 4"]
    assert [n.content for n in bob.list_all()] == ["Bob's note"]  # another user's match is untouched
    assert alice.delete_all() == 2 and alice.count() == 0
    alice.close()
