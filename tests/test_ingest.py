"""LoCoMo reader and bulk ingestion (JSONL and LoCoMo): order, dates, scopes, resumability, errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

from amem import Filters, InvalidInput, Memory, NoteInput
from amem.ingest import ingest_jsonl, ingest_locomo, read_jsonl, stored_sources
from amem.locomo import Conversation, Turn, load, parse_session_time

from .conftest import make_memory

FIXTURE = Path(__file__).parent / "data" / "locomo_tiny.json"

CONV_A_IDS = ["D1:1", "D1:2", "D1:3", "D2:1", "D2:2", "D2:3"]  # D2:4 is whitespace only: dropped
CONV_B_IDS = ["D1:1", "D1:2", "D2:1", "D2:2", "D10:1"]  # session_10 after session_2, whatever the key order


pytestmark = pytest.mark.usefixtures("fake_models_env")


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    m = make_memory(tmp_path / "mem" / "memory.db")
    yield m
    m.close()


def by_id(convs: list[Conversation]) -> dict[str, Conversation]:
    return {c.sample_id: c for c in convs}


# -- locomo.load -----------------------------------------------------------------------------------


def test_load_fixture_conversations() -> None:
    convs = load(FIXTURE)
    assert [c.sample_id for c in convs] == ["conv-a", "conv-b"]
    assert convs[0].speakers == ("Caroline", "Melanie")
    assert convs[1].speakers == ("Jon", "Gina")


def test_turns_in_session_order() -> None:
    convs = by_id(load(str(FIXTURE)))  # str paths work too
    assert [t.dia_id for t in convs["conv-a"].turns] == CONV_A_IDS
    assert [t.dia_id for t in convs["conv-b"].turns] == CONV_B_IDS
    assert [t.session for t in convs["conv-b"].turns] == [1, 1, 2, 2, 10]


def test_session_dates_parsed_as_utc() -> None:
    convs = by_id(load(FIXTURE))
    first = convs["conv-a"].turns[0]
    assert first.event_time == datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)
    assert first.event_time.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    times = {t.session: t.event_time for t in convs["conv-b"].turns}
    assert times == {
        1: datetime(2023, 1, 20, 16, 4, tzinfo=timezone.utc),
        2: datetime(2023, 1, 29, 14, 32, tzinfo=timezone.utc),
        10: datetime(2023, 6, 27, 10, 37, tzinfo=timezone.utc),
    }


def test_blip_caption_in_content() -> None:
    turns = {t.dia_id: t for t in by_id(load(FIXTURE))["conv-a"].turns}
    photo = turns["D1:3"]
    assert photo.blip_caption == "a photo of a dog walking past a wall with a painting of a woman"
    assert photo.content() == (
        "Caroline: The transgender stories were so inspiring! "
        "[shares a photo: a photo of a dog walking past a wall with a painting of a woman]"
    )
    assert turns["D1:1"].content() == (
        "Caroline: Hey Mel! I went to a LGBTQ support group yesterday and it was so powerful."
    )
    assert turns["D1:1"].blip_caption is None
    # a photo without words is kept; its caption is the content
    image_only = turns["D2:3"]
    assert image_only.text == ""
    assert "a painting of a sunset over a lake" in image_only.content()
    assert image_only.content().startswith("Melanie:")


def test_turn_content_without_caption() -> None:
    t = Turn("D1:1", "Jon", "hello", 1, datetime(2023, 1, 1, tzinfo=timezone.utc))
    assert t.content() == "Jon: hello"


def test_qa_kept() -> None:
    convs = by_id(load(FIXTURE))
    qa = convs["conv-a"].qa
    assert len(qa) == 5
    assert sorted(q["category"] for q in qa) == [1, 2, 3, 4, 5]
    adversarial = next(q for q in qa if q["category"] == 5)
    assert adversarial["adversarial_answer"] == "self-care is important"
    assert "answer" not in adversarial
    assert qa[0] == {
        "question": "What did Caroline research?",
        "answer": "Adoption agencies",
        "evidence": ["D2:2"],
        "category": 1,
    }
    assert len(convs["conv-b"].qa) == 3


def test_single_conversation_object_is_accepted(tmp_path: Path) -> None:
    raw = json.loads(FIXTURE.read_text())[1]
    path = tmp_path / "one.json"
    path.write_text(json.dumps(raw))
    convs = load(path)
    assert [c.sample_id for c in convs] == ["conv-b"]


def test_missing_sample_id_gets_an_index_name(tmp_path: Path) -> None:
    raw = json.loads(FIXTURE.read_text())
    del raw[1]["sample_id"]
    path = tmp_path / "anon.json"
    path.write_text(json.dumps(raw))
    assert [c.sample_id for c in load(path)] == ["conv-a", "conv-1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)),
        ("10:37 am on 27 June, 2023", datetime(2023, 6, 27, 10, 37, tzinfo=timezone.utc)),
        ("12:00 am on 1 January, 2024", datetime(2024, 1, 1, 0, 0, tzinfo=timezone.utc)),
        ("12:30 pm on 1 January, 2024", datetime(2024, 1, 1, 12, 30, tzinfo=timezone.utc)),
        ("1:56pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)),
        ("1:56 pm on 8 May 2023", datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)),
        ("  1:56  pm on 8   May, 2023 ", datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)),
        ("9:15 am on 2 Mar, 2023", datetime(2023, 3, 2, 9, 15, tzinfo=timezone.utc)),
    ],
)
def test_parse_session_time(text: str, expected: datetime) -> None:
    assert parse_session_time(text) == expected


@pytest.mark.parametrize(
    "text", ["yesterday", "2023-05-08", "13:56 on 8 May, 2023", "1:56 pm on 31 February, 2023"]
)
def test_parse_session_time_rejects(text: str) -> None:
    with pytest.raises(InvalidInput, match="session date"):
        parse_session_time(text)


def _write(tmp_path: Path, payload: object, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload), encoding="utf-8")
    return path


GOOD_DATE = "1:56 pm on 8 May, 2023"


@pytest.mark.parametrize(
    "payload",
    [
        "{not json",
        '"just a string"',
        "[1, 2]",
        [{"sample_id": "x", "qa": []}],  # no 'conversation'
        [{"conversation": {"session_1": [{"speaker": "A", "dia_id": "D1:1", "text": "hi"}]}}],  # no date
        [{"conversation": {"session_1_date_time": "someday", "session_1": []}}],  # unreadable date
    ],
    ids=["not-json", "string", "list-of-numbers", "no-conversation", "no-date", "bad-date"],
)
def test_malformed_file_is_invalid_input(tmp_path: Path, payload: object) -> None:
    with pytest.raises(InvalidInput):
        load(_write(tmp_path, payload))


def test_missing_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read"):
        load(tmp_path / "absent.json")


def test_turn_without_dia_id_is_invalid_input(tmp_path: Path) -> None:
    payload = [
        {"conversation": {"session_1_date_time": GOOD_DATE, "session_1": [{"speaker": "A", "text": "hi"}]}}
    ]
    with pytest.raises(InvalidInput):
        load(_write(tmp_path, payload))


def test_session_not_a_list_of_turns_is_invalid_input(tmp_path: Path) -> None:
    payload = [{"conversation": {"session_1_date_time": GOOD_DATE, "session_1": ["hello"]}}]
    with pytest.raises(InvalidInput):
        load(_write(tmp_path, payload))


def test_conversation_not_an_object_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        load(_write(tmp_path, [{"conversation": ["x"]}]))


# -- ingest_locomo ---------------------------------------------------------------------------------


def test_ingest_locomo_one_scope_per_conversation(memory: Memory) -> None:
    report = ingest_locomo(memory, FIXTURE)
    assert report["added"] == len(CONV_A_IDS) + len(CONV_B_IDS)
    assert report["states"] == {"enriched": report["added"]}
    assert len(report["ids"]) == report["added"] == len(set(report["ids"]))

    a, b = memory.scoped(user_id="conv-a"), memory.scoped(user_id="conv-b")
    assert a.count() == len(CONV_A_IDS)
    assert b.count() == len(CONV_B_IDS)
    assert memory.scoped(user_id="someone-else").count() == 0
    assert {n.user_id for n in memory.list(limit=100)} == {"conv-a", "conv-b"}
    assert {n.agent_id for n in memory.list(limit=100)} == {None}


def test_ingest_locomo_metadata_content_and_time(memory: Memory) -> None:
    ingest_locomo(memory, FIXTURE)
    notes = {n.metadata["dia_id"]: n for n in memory.scoped(user_id="conv-b").list(limit=100)}
    assert sorted(notes) == sorted(CONV_B_IDS)
    late = notes["D10:1"]
    assert late.metadata == {"dia_id": "D10:1", "speaker": "Gina", "session": 10, "sample_id": "conv-b"}
    assert late.content == "Gina: My clothing store got its first big order this week!"
    assert late.event_time == datetime(2023, 6, 27, 10, 37, tzinfo=timezone.utc)

    photo = next(n for n in memory.scoped(user_id="conv-a").list(limit=100) if n.metadata["dia_id"] == "D1:3")
    assert "[shares a photo: a photo of a dog walking past a wall" in photo.content
    assert photo.metadata["speaker"] == "Caroline" and photo.metadata["session"] == 1


def test_ingest_locomo_keeps_turn_order(memory: Memory) -> None:
    ingest_locomo(memory, FIXTURE)
    b = memory.scoped(user_id="conv-b")
    oldest_first = [n.metadata["dia_id"] for n in b.store.iter_notes(b.scope)]
    assert oldest_first == CONV_B_IDS


def test_ingest_locomo_is_resumable(memory: Memory) -> None:
    first = ingest_locomo(memory, FIXTURE)
    count = memory.count()
    versions = memory.stats()["versions"]
    again = ingest_locomo(memory, FIXTURE)
    assert again == {"added": 0, "states": {}, "ids": []}
    assert memory.count() == count == first["added"]
    assert memory.stats()["versions"] == versions


def test_ingest_locomo_resumes_after_a_partial_run(memory: Memory) -> None:
    partial = ingest_locomo(memory, FIXTURE, max_turns=2)
    assert partial["added"] == 4
    rest = ingest_locomo(memory, FIXTURE)
    assert rest["added"] == len(CONV_A_IDS) + len(CONV_B_IDS) - 4
    dia = sorted(n.metadata["dia_id"] for n in memory.scoped(user_id="conv-a").list(limit=100))
    assert dia == sorted(CONV_A_IDS)  # no duplicates
    assert stored_sources(memory.scoped(user_id="conv-b")) == {("conv-b", d) for d in CONV_B_IDS}


def test_ingest_locomo_max_turns(memory: Memory) -> None:
    report = ingest_locomo(memory, FIXTURE, max_turns=3)
    assert report["added"] == 6
    assert (
        sorted(n.metadata["dia_id"] for n in memory.scoped(user_id="conv-a").list(limit=100))
        == CONV_A_IDS[:3]
    )
    assert sorted(n.metadata["dia_id"] for n in memory.scoped(user_id="conv-b").list(limit=100)) == [
        "D1:1",
        "D1:2",
        "D2:1",
    ]


def test_ingest_locomo_only_some_conversations(memory: Memory) -> None:
    report = ingest_locomo(memory, FIXTURE, only=["conv-b"])
    assert report["added"] == len(CONV_B_IDS)
    assert memory.scoped(user_id="conv-a").count() == 0


def test_ingest_locomo_unknown_conversation(memory: Memory) -> None:
    with pytest.raises(InvalidInput, match="conv-zzz"):
        ingest_locomo(memory, FIXTURE, only=["conv-a", "conv-zzz"])
    assert memory.count() == 0


def test_ingest_locomo_one_call_per_note(memory: Memory) -> None:
    report = ingest_locomo(memory, FIXTURE, only=["conv-b"], batch_size=1)
    assert report["added"] == len(CONV_B_IDS)
    construct = [c for c in memory.llm_calls() if c.ok and not c.cached]
    assert len(construct) == len(CONV_B_IDS)


def test_ingest_locomo_reports_progress(memory: Memory) -> None:
    seen: list[tuple[str, int, list[tuple[int, int]]]] = []

    @contextmanager
    def bar(label: str, total: int) -> Iterator[Callable[[int, int], None]]:
        updates: list[tuple[int, int]] = []
        seen.append((label, total, updates))
        yield lambda done, tot: updates.append((done, tot))

    ingest_locomo(memory, FIXTURE, bar=bar)
    assert [(label, total) for label, total, _ in seen] == [("conv-a", 6), ("conv-b", 5)]
    for _, total, updates in seen:
        assert updates and updates[-1] == (total, total)


def test_ingested_conversations_do_not_see_each_other(memory: Memory) -> None:
    ingest_locomo(memory, FIXTURE)
    hits = memory.scoped(user_id="conv-b").search("dance studio", k=10)
    assert hits
    assert {h.note.user_id for h in hits} == {"conv-b"}
    for note in memory.scoped(user_id="conv-a").list(limit=100):
        for link in memory.links(note.id):
            assert memory.store.get_note(link.target_id).user_id == "conv-a"  # type: ignore[union-attr]
            assert memory.store.get_note(link.source_id).user_id == "conv-a"  # type: ignore[union-attr]


def test_ingest_locomo_into_a_user_scope_keeps_every_conversation(tmp_path: Path) -> None:
    m = make_memory(tmp_path / "alice" / "memory.db", user_id="alice")
    try:
        report = ingest_locomo(m, FIXTURE)
        assert report["added"] == len(CONV_A_IDS) + len(CONV_B_IDS)
        stored = sorted((n.metadata["sample_id"], n.metadata["dia_id"]) for n in m.list(limit=100))
        assert stored == sorted([("conv-a", d) for d in CONV_A_IDS] + [("conv-b", d) for d in CONV_B_IDS])
    finally:
        m.close()


def test_ingest_locomo_with_a_user_uses_that_user(tmp_path: Path) -> None:
    m = make_memory(tmp_path / "alice" / "memory.db", user_id="alice")
    try:
        ingest_locomo(m, FIXTURE, only=["conv-a"])
        assert {n.user_id for n in m.store.iter_notes(m.scope)} == {"alice"}
        assert m.scoped(user_id="conv-a").count() == 0
    finally:
        m.close()


# -- JSONL -----------------------------------------------------------------------------------------


def test_read_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "content": "Caroline went to a support group",
                        "event_time": "2023-05-08T13:56:00Z",
                        "metadata": {"source": "chat", "n": 1},
                    }
                ),
                "",
                json.dumps("a bare string is a note too"),
                "   ",
                json.dumps({"content": "naive time is UTC", "event_time": "2023-05-08T13:56:00"}),
                json.dumps({"content": "offset time", "event_time": "2023-05-08T15:56:00+02:00"}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    items = read_jsonl(path)
    assert [i.content for i in items] == [
        "Caroline went to a support group",
        "a bare string is a note too",
        "naive time is UTC",
        "offset time",
    ]
    assert all(isinstance(i, NoteInput) for i in items)
    assert items[0].metadata == {"source": "chat", "n": 1}
    assert items[0].event_time == datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)
    assert items[1].event_time is None and items[1].metadata == {}


@pytest.mark.parametrize(
    ("lines", "bad_line"),
    [
        (['{"content": "ok"}', '{"content": "ok"}', "{broken"], 3),
        (['{"content": "ok"}', '{"text": "no content key"}'], 2),
        (['{"content": ["not", "a", "string"]}'], 1),
        (['{"content": "ok"}', "", '{"content": "ok", "event_time": "next tuesday"}'], 3),
        (['{"content": "ok"}', '{"content": "ok", "metadata": "not an object"}'], 2),
    ],
    ids=["bad-json", "missing-content", "content-not-string", "bad-time", "metadata-not-object"],
)
def test_read_jsonl_errors_name_the_line(tmp_path: Path, lines: list[str], bad_line: int) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as info:
        read_jsonl(path)
    assert f"{path}:{bad_line}:" in str(info.value)
    assert "nothing was added" in str(info.value)


def test_ingest_jsonl_adds_in_order(memory: Memory, tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    rows = [
        {
            "content": "Melanie ran a charity race for mental health",
            "event_time": "2023-05-20T10:00:00Z",
            "metadata": {"source": "race"},
        },
        {"content": "Melanie ran another charity race", "metadata": {"source": "race"}},
        {"content": "Jon opened a dance studio downtown"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    calls: list[tuple[str, int]] = []

    @contextmanager
    def bar(label: str, total: int) -> Iterator[Callable[[int, int], None]]:
        calls.append((label, total))
        yield lambda done, tot: None

    report = ingest_jsonl(memory, path, None, bar)
    assert report["added"] == 3
    assert report["states"] == {"enriched": 3}
    assert calls == [("adding", 3)]
    notes = [memory.get(i) for i in report["ids"]]
    assert [n.content for n in notes] == [r["content"] for r in rows]
    assert notes[0].event_time == datetime(2023, 5, 20, 10, 0, tzinfo=timezone.utc)
    assert memory.count(Filters(metadata={"source": "race"})) == 2


def test_ingest_jsonl_bad_line_adds_nothing(memory: Memory, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"content": "fine"}\n{"content": "fine too"}\nnot json\n', encoding="utf-8")

    @contextmanager
    def bar(label: str, total: int) -> Iterator[Callable[[int, int], None]]:
        yield lambda done, tot: None

    with pytest.raises(InvalidInput, match=":3:"):
        ingest_jsonl(memory, path, None, bar)
    assert memory.count() == 0


def test_ingest_jsonl_empty_content_adds_nothing(memory: Memory, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text('{"content": "fine"}\n{"content": "   "}\n', encoding="utf-8")

    @contextmanager
    def bar(label: str, total: int) -> Iterator[Callable[[int, int], None]]:
        yield lambda done, tot: None

    with pytest.raises(InvalidInput):
        ingest_jsonl(memory, path, None, bar)
    assert memory.count() == 0


def test_jsonl_empty_content_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text('{"content": "fine"}\n{"content": "   "}\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=":2:"):
        read_jsonl(path)


def test_read_jsonl_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('"caf\u00e9"\n'.encode("utf-8") + '"na\u00efve"\n'.encode("latin-1"))
    with pytest.raises(InvalidInput):
        read_jsonl(path)


def test_locomo_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(
        FIXTURE.read_text(encoding="utf-8").replace("Caroline", "Carol\u00efne").encode("latin-1")
    )
    with pytest.raises(InvalidInput):
        load(path)
