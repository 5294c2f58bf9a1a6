"""Episode writes: turns stored at once, one LLM call per episode, every field checked."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from amem import Memory
from amem.llm.base import Message
from amem.llm.fake import FakeLLM
from amem.notes import EnrichState, Note
from amem.steps import episode, when
from amem.store import Filters

from .conftest import make_memory

DAY = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
TURNS = [
    ("Gina", "Hey Jon, how are you?"),
    ("Jon", "I lost my job as a banker last week, so I am starting my own dance studio."),
    ("Gina", "Wow, a dance studio! Where will it be?"),
    ("Jon", "Downtown, near the old theatre. I signed the lease yesterday."),
    ("Gina", "Thanks for telling me!"),
]


def _items(
    turns: list[tuple[str, str]] = TURNS, day: datetime = DAY, session: int = 1
) -> list[dict[str, Any]]:
    return [
        {
            "content": f"{who}: {text}",
            "event_time": day + timedelta(minutes=i),
            "metadata": {"speaker": who, "session": session},
        }
        for i, (who, text) in enumerate(turns)
    ]


def _episode_memory(tmp_path: Path, llm: FakeLLM, **options: Any) -> Memory:
    return make_memory(tmp_path / "memory.db", llm=llm, options={"pipeline": "episode", **options})


def _calls(llm: FakeLLM, step_marker: str = "EPISODE:") -> list[list[Message]]:
    return [m for m, _ in llm.calls if step_marker in m[-1].content]


def test_an_episode_is_one_call_and_every_turn_is_enriched(tmp_path: Path) -> None:
    llm = FakeLLM()
    with _episode_memory(tmp_path, llm) as mem:
        notes = mem.add_many(_items())
        assert len(_calls(llm)) == 1 and len(llm.calls) == 1  # no repair or second call
        assert all(n.state == EnrichState.enriched for n in notes)
        assert all(n.keywords and n.context and n.tags for n in notes)
        # keywords are the turn's own words, derived without the LLM
        jon = notes[1]
        assert set(jon.keywords) <= set(jon.content.lower().replace(",", " ").replace(".", " ").split())
        calls = mem.llm_calls()
        assert [c.step for c in calls] == ["construct_episode"]
        assert set(calls[0].note_ids[:5]) == {n.id for n in notes}


def test_each_turn_gets_a_context_from_its_text_with_its_times_resolved(tmp_path: Path) -> None:
    with _episode_memory(tmp_path, FakeLLM()) as mem:
        notes = mem.add_many(_items())
        jon = notes[1]  # "I lost my job as a banker last week ..." on Monday 8 May 2023
        assert jon.context.startswith("Jon to Gina on 8 May 2023 (Monday), about ")
        assert jon.context.endswith("; last week: the week of 1 May 2023.")
        lease = notes[3]  # "I signed the lease yesterday."
        assert lease.context.endswith("yesterday: 7 May 2023.") and "lease" in lease.keywords
        # derived, so grounded: the audit finds nothing unsupported
        assert mem.audit().contexts.share_grounded == 1.0


def test_relative_times_resolve_from_the_turns_date() -> None:
    friday = datetime(2023, 1, 20, 13, 0, tzinfo=UTC)
    said = "Yesterday I quit; next Fri we dance, last weekend I ran, two weeks ago I moved, last year too."
    assert when.resolve(said, friday) == [
        "yesterday: 19 January 2023",
        "next fri: 27 January 2023",
        "last weekend: the weekend of 14 January 2023",
        "two weeks ago: the week of 2 January 2023",
        "last year: 2022",
    ]
    assert when.resolve("this Friday and next month", friday) == [
        "this friday: 20 January 2023",
        "next month: February 2023",
    ]
    assert when.resolve("nothing relative here", friday) == []


def test_episodes_are_cut_at_sessions_and_at_the_size_limit(tmp_path: Path) -> None:
    llm = FakeLLM()
    with _episode_memory(tmp_path, llm, episode_turns=3) as mem:
        later = [(who, text + " Truly.") for who, text in TURNS]
        items = _items() + _items(later, day=DAY + timedelta(days=3), session=2)
        mem.add_many(items)
        # 5 turns of session 1 at 3 per episode = 2 calls, then session 2 again 2
        assert len(_calls(llm)) == 4
        firsts = [m[-1].content.rsplit("EPISODE:", 1)[1] for m in _calls(llm)]
        assert "T4" not in firsts[0] and "T3" in firsts[0]


def test_segment_cuts_at_a_gap_a_session_a_scope_and_a_topic_shift() -> None:
    def note(text: str, minutes: int, session: int = 1, user: str = "u") -> Note:
        return Note(
            content=text,
            user_id=user,
            event_time=DAY + timedelta(minutes=minutes),
            metadata={"session": session},
        )

    import numpy as np

    same = np.array([1.0, 0.0], dtype=np.float32)
    other = np.array([0.0, 1.0], dtype=np.float32)
    notes = [note("a", 0), note("b", 1), note("c", 2), note("d", 3), note("e", 4)]
    vectors = np.stack([same, same, same, same, other])
    assert episode.segment(notes, vectors) == [[0, 1, 2, 3], [4]]  # a topic shift after 4 turns
    assert episode.segment(notes[:3], vectors[:3], episode.Rules(max_turns=2)) == [[0, 1], [2]]
    gap = [note("a", 0), note("b", 200)]
    assert episode.segment(gap, np.stack([same, same])) == [[0], [1]]
    sessions = [note("a", 0), note("b", 1, session=2)]
    assert episode.segment(sessions, np.stack([same, same])) == [[0], [1]]
    scopes = [note("a", 0), note("b", 1, user="v")]
    assert episode.segment(scopes, np.stack([same, same])) == [[0], [1]]
    short = [note("a", 0), note("b", 1)]  # too short to judge a topic by
    assert episode.segment(short, np.stack([same, other])) == [[0, 1]]


def test_a_failed_episode_keeps_every_turn_pending_and_enrich_finishes_it(tmp_path: Path) -> None:
    llm = FakeLLM(script=["not json at all", "still not json"])  # the answer and its one retry
    with _episode_memory(tmp_path, llm, llm_cache=False) as mem:
        notes = mem.add_many(_items())
        assert all(n.state == EnrichState.pending for n in notes)
        found = mem.search("dance studio lease")
        assert found and found[0].note.id in {n.id for n in notes}  # searchable at once
        calls_before = len(llm.calls)
        report = mem.enrich()
        assert report.enriched == 5
        assert len(llm.calls) == calls_before + 1  # one call for the whole episode
        assert mem.count(Filters(states=[EnrichState.pending])) == 0


def test_an_episode_links_the_older_notes_it_is_about_from_its_closest_turn(tmp_path: Path) -> None:
    def answer(messages: list[Message], schema: dict[str, Any] | None) -> str:
        prompt = messages[-1].content
        if "OLDER NOTES: none" in prompt:
            return json.dumps({"topic": "dance studio"})
        # N1 is real; N9 was never shown; an update of a note that is not UPDATABLE is dropped
        return json.dumps(
            {
                "topic": "salsa in paris",  # nothing the episode says: refused as its tag
                "related": ["N1", "N9"],
                "updates": [{"note": "N1", "context": "Jon invented a salsa school in Paris."}],
            }
        )

    llm = FakeLLM(handler=answer)
    with _episode_memory(tmp_path, llm) as mem:
        first = mem.add_many(_items()[1:2])
        later = [
            ("Gina", "How is the new dance studio going?"),
            ("Jon", "The studio lease is signed, banker days are over."),
        ]
        last = mem.add_many(_items(later, day=DAY + timedelta(days=2), session=2))
        prompt = _calls(llm)[-1][-1].content
        assert (
            "OLDER NOTES:\nN1 [8 May 2023 (Monday)] Jon: I lost my job" in prompt
        )  # the first episode, enriched
        links = [lk for n in last for lk in mem.links(n.id) if lk.source_id == n.id]
        assert [(lk.target_id, lk.reason != "") for lk in links] == [(first[0].id, True)]
        assert mem.get(first[0].id).version == 2  # not evolved: N1 was not offered as UPDATABLE
        assert "salsa in paris" not in last[0].tags
        refused = [r for c in mem.llm_calls() for r in c.refused]
        assert any(r.field == "tags" and r.text == "salsa in paris" for r in refused)


def test_single_add_is_an_episode_of_one(tmp_path: Path) -> None:
    llm = FakeLLM()
    with _episode_memory(tmp_path, llm) as mem:
        note = mem.add("Jon: I signed the lease of my dance studio yesterday.", event_time=DAY)
        assert note.state == EnrichState.enriched
        assert [c.step for c in mem.llm_calls()] == ["construct_episode"]


def test_background_enrichment_batches_waiting_turns_into_episodes(tmp_path: Path) -> None:
    llm = FakeLLM()
    with _episode_memory(tmp_path, llm) as mem:
        notes = mem.add_many(_items(), wait=False)
        assert mem.background.wait(timeout=30)
        assert all(mem.get(n.id).state == EnrichState.enriched for n in notes)
        assert len(_calls(llm)) == 1


def test_an_episode_of_greetings_makes_no_call(tmp_path: Path) -> None:
    llm = FakeLLM()
    with _episode_memory(tmp_path, llm) as mem:
        notes = mem.add_many(_items([("Gina", "Bye Jon!"), ("Jon", "See you soon, Gina!")]))
        assert llm.calls == [] and mem.llm_calls() == []
        assert all(n.state == EnrichState.enriched and n.context and n.keywords for n in notes)
        assert notes[0].context.startswith("Gina to Jon on 8 May 2023")


def test_an_episode_evolves_an_older_note_only_with_what_it_says(tmp_path: Path) -> None:
    def answer(messages: list[Message], schema: dict[str, Any] | None) -> str:
        if "OLDER NOTES: none" in messages[-1].content:
            return json.dumps({"topic": "dance studio"})
        return json.dumps(
            {
                "topic": "dance studio",
                "related": ["N1"],
                "updates": [
                    {
                        "note": "N1",
                        "context": "Jon lost his banker job and opened his dance studio downtown.",
                    },
                    {"note": "N1", "context": "a repeated alias is dropped"},
                ],
            }
        )

    llm = FakeLLM(handler=answer)
    mem = make_memory(
        tmp_path / "memory.db", llm=llm, options={"pipeline": "episode"}, evolve_floor=0.0, link_floor=0.0
    )
    with mem:
        (first,) = mem.add_many(_items()[1:2])
        last = mem.add_many(
            _items(
                [("Jon", "The dance studio opened downtown today!")], day=DAY + timedelta(days=30), session=2
            )
        )
        evolved = mem.get(first.id)
        assert evolved.context == "Jon lost his banker job and opened his dance studio downtown."
        assert [v.cause.value for v in mem.history(first.id)][-1] == "evolve"
        assert mem.history(first.id)[-1].detail == f"evolved by note {last[0].id}"

    def invented(messages: list[Message], schema: dict[str, Any] | None) -> str:
        if "OLDER NOTES: none" in messages[-1].content:
            return json.dumps({"topic": "dance studio"})
        return json.dumps(
            {"topic": "dance", "updates": [{"note": "N1", "context": "Jon now teaches salsa in Paris."}]}
        )

    mem = make_memory(
        tmp_path / "other.db",
        llm=FakeLLM(handler=invented),
        options={"pipeline": "episode"},
        evolve_floor=0.0,
        link_floor=0.0,
    )
    with mem:
        (first,) = mem.add_many(_items()[1:2])
        mem.add_many(
            _items(
                [("Jon", "The dance studio opened downtown today!")], day=DAY + timedelta(days=30), session=2
            )
        )
        assert "salsa" not in mem.get(first.id).context
        refused = [r for c in mem.llm_calls() for r in c.refused if r.field == "update"]
        assert refused and refused[0].action == "refused"
