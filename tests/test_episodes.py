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
from amem.steps import episode
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


def test_trivial_turns_get_no_entry_and_a_derived_context(tmp_path: Path) -> None:
    llm = FakeLLM()
    with _episode_memory(tmp_path, llm) as mem:
        notes = mem.add_many(_items())
        schema = llm.calls[0][1]
        assert schema is not None
        answerable = schema["properties"]["contexts"]["required"]
        # "Hey Jon, how are you?" and "Thanks for telling me!" say nothing worth a call's words
        assert answerable == ["T2 Jon", "T3 Gina", "T4 Jon"]  # each key names its speaker
        assert notes[0].context.startswith("Gina on ") and notes[4].context.startswith("Gina on ")
        assert notes[1].context.startswith("Jon says about ")  # the fake model's entry for T2


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


def test_a_context_may_name_what_an_earlier_turn_said_but_nothing_invented(tmp_path: Path) -> None:
    def answer(messages: list[Message], schema: dict[str, Any] | None) -> str:
        return json.dumps(
            {
                "topic": "dance studio",
                "contexts": {
                    # invented: a salsa class nobody mentioned
                    "T2 Jon": "says he lost his banker job and teaches salsa in Paris.",
                    # another turn's words: T4's context given to T3
                    "T3 Gina": "says Jon signed the lease downtown near the old theatre.",
                    # T4 says "it" is downtown; the studio is named by T2, the date resolved
                    "T4 Jon": "says his dance studio is downtown; he signed its lease on 7 May 2023.",
                },
                "links": {"T4": ["T2"]},  # a link inside the episode: not asked for, dropped
            }
        )

    llm = FakeLLM(handler=answer)
    with _episode_memory(tmp_path, llm) as mem:
        notes = mem.add_many(_items())
        t4, t3, t2 = notes[3], notes[2], notes[1]
        assert t4.context == "Jon says his dance studio is downtown; he signed its lease on 7 May 2023."
        assert "salsa" not in t2.context and "Paris" not in t2.context
        assert "lease" not in t3.context and t3.context.startswith("Gina on ")  # derived, not repaired
        assert "lease" in t4.keywords and "downtown" in t4.keywords  # the context's words come first
        assert len(llm.calls) == 1
        assert mem.links(t4.id) == [] and t2.id
        refused = [r for c in mem.llm_calls() for r in c.refused]
        assert any(r.field == "context" and "salsa" in r.text for r in refused)
        assert any(r.field == "context" and r.reason == "about another turn" for r in refused)
        assert "dance studio" in t2.tags


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


def test_later_turns_see_earlier_episodes_as_older_notes_and_link_to_them(tmp_path: Path) -> None:
    def answer(messages: list[Message], schema: dict[str, Any] | None) -> str:
        if "OLDER NOTES: none" in messages[-1].content:
            return json.dumps(
                {"topic": "dance studio", "contexts": {"T2 Jon": "says he starts a dance studio."}}
            )
        return json.dumps(
            {
                "topic": "dance studio",
                "contexts": {"T1 Jon": "says the dance studio opens next month."},
                "links": {"T1": ["N1", "N7", "T1"]},
            }
        )

    llm = FakeLLM(handler=answer)
    with _episode_memory(tmp_path, llm) as mem:
        first = mem.add_many(_items()[:2])
        last = mem.add_many(
            _items(
                [("Jon", "The dance studio downtown opens next month, the lease is signed.")],
                day=DAY + timedelta(days=2),
                session=2,
            )
        )
        prompt = _calls(llm)[-1][-1].content
        assert "OLDER NOTES:\nN1" in prompt  # the enriched turns of the first episode are shown
        shown = prompt.split("OLDER NOTES:")[-1].split("N1 ")[1].split("\n")[0]
        links = mem.links(last[0].id)
        assert len(links) == 1 and links[0].reason  # unknown aliases dropped; the reason derived
        target = mem.get(links[0].target_id)
        assert target.id in {n.id for n in first} and target.content.split(": ")[1][:20] in shown


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
