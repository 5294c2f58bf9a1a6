"""Validation of every LLM output field, the tolerant JSON reader, and prompt rendering."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from amem.llm.jsonparse import parse_json_object
from amem.notes import Note
from amem.prompts import analyse, batch, evolve, note
from amem.prompts.common import Candidate, clean_terms


def parse_note(
    data: dict[str, Any], links: tuple[str, ...] = ("N1", "N2"), updatable: tuple[str, ...] = ("N1",)
):
    return note.NoteOutput.model_validate(data, context={"link_aliases": links, "update_aliases": updatable})


GOOD = {"keywords": ["marathon"], "tags": ["sport"], "context": "Maya trains for a marathon."}


@pytest.mark.parametrize(
    "raw, expected",
    [
        (['"marathon"', "[training]", "marathon", "  ", "Marathon"], ["marathon", "training"]),
        ("berlin, marathon; ankle", ["berlin", "marathon", "ankle"]),
        (["x" * 41, "ok"], ["ok"]),
        ([1, None, "fine"], ["fine"]),
        (["#hashtag", "'quoted'"], ["hashtag", "quoted"]),
    ],
)
def test_clean_terms_strips_debris(raw: Any, expected: list[str]) -> None:
    assert clean_terms(raw, 8) == expected


def test_tags_are_lower_case_and_capped() -> None:
    out = parse_note({**GOOD, "tags": ["Sport", "HEALTH", "a", "b", "c", "d", "e", "f"]})
    assert out.tags == ["sport", "health", "a", "b", "c", "d"]


@pytest.mark.parametrize(
    "broken",
    [
        {**GOOD, "keywords": []},
        {**GOOD, "keywords": ['""', "[]"]},
        {**GOOD, "tags": []},
        {**GOOD, "context": ""},
        {**GOOD, "context": "  ok "},
        {**GOOD, "keywords": "   "},
        {"tags": ["x"], "context": "missing keywords entirely"},
        {**GOOD, "context": 42},
    ],
)
def test_empty_or_missing_attributes_are_rejected(broken: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_note(broken)


def test_links_keep_only_offered_aliases_once() -> None:
    out = parse_note(
        {
            **GOOD,
            "links": [
                {"to": "n1", "why": "same race"},
                {"to": "N1", "why": "duplicate"},
                {"to": "R1", "why": "example alias"},
                {"to": "N7", "why": "not offered"},
                {"to": "N2"},
            ],
        }
    )
    assert [(lk.to, lk.why) for lk in out.links] == [("N1", "same race"), ("N2", "")]


def test_updates_only_for_updatable_aliases_with_real_context() -> None:
    out = parse_note(
        {
            **GOOD,
            "updates": [
                {"note": "N2", "context": "N2 is linkable but not updatable", "tags": []},
                {"note": "N1", "context": "short"},
                {"note": "N1", "context": "A proper new context sentence.", "tags": ["Sport", ""]},
            ],
        }
    )
    assert [(u.note, u.context, u.tags) for u in out.updates] == [
        ("N1", "A proper new context sentence.", ["sport"])
    ]


def test_overlong_context_is_clipped_not_rejected() -> None:
    out = parse_note({**GOOD, "context": "word " * 200})
    assert len(out.context) <= 301 and out.context.endswith("…")


def test_evolve_output_validation() -> None:
    ctx = {"aliases": ["N1", "N2"]}
    good = evolve.EvolveOutput.model_validate(
        {
            "should_evolve": True,
            "actions": ["strengthen", "delete_everything"],
            "suggested_connections": ["N2", "N2", "N5", "0"],
            "tags_to_update": ["A", ""],
            "new_context_neighborhood": ["c1", "c2"],
            "new_tags_neighborhood": [["t"], "u, v"],
        },
        context=ctx,
    )
    assert good.actions == ["strengthen"]
    assert good.suggested_connections == ["N2"]
    assert good.tags_to_update == ["a"]
    assert good.new_tags_neighborhood == [["t"], ["u", "v"]]
    misaligned = evolve.EvolveOutput.model_validate(
        {
            "should_evolve": True,
            "new_context_neighborhood": ["only one"],
            "new_tags_neighborhood": [["t"], ["u"]],
        },
        context=ctx,
    )
    assert misaligned.new_context_neighborhood == [] and misaligned.new_tags_neighborhood == []


def test_analyse_output_validation() -> None:
    out = analyse.AnalyseOutput.model_validate(
        {"keywords": ["a"], "context": "A full sentence here.", "tags": ["X"]}
    )
    assert out.tags == ["x"]
    with pytest.raises(ValidationError):
        analyse.AnalyseOutput.model_validate(
            {"keywords": [], "context": "A full sentence here.", "tags": ["x"]}
        )


def test_batch_output_drops_unknown_and_repeated_entries() -> None:
    ctx = {"new_aliases": ["T1", "T2"], "link_aliases": ["N1"], "update_aliases": []}
    out = batch.BatchOutput.model_validate(
        {
            "notes": [
                {
                    "note": "T1",
                    "keywords": ["a"],
                    "tags": ["x"],
                    "context": "First context here.",
                    "links": [
                        {"to": "N1", "why": "r"},
                        {"to": "T1", "why": "self"},
                        {"to": "A1", "why": "example"},
                    ],
                },
                {"note": "T1", "keywords": ["dup"], "tags": ["x"], "context": "Duplicate entry here."},
                {"note": "T9", "keywords": ["b"], "tags": ["x"], "context": "Unknown alias here."},
                {"note": "T2", "keywords": [], "tags": ["x"], "context": "Empty keywords here."},
            ],
            "updates": [{"note": "N1", "context": "not updatable in this batch", "tags": []}],
        },
        context=ctx,
    )
    assert [e.note for e in out.notes] == ["T1"]
    assert [lk.to for lk in out.notes[0].links] == ["N1"]
    assert out.updates == []
    with pytest.raises(ValidationError):
        batch.BatchOutput.model_validate({"notes": []}, context=ctx)


def test_note_prompt_renders_aliases_schema_enums_and_fixed_prefix() -> None:
    new = Note(content="Maya twisted her ankle.")
    cands = [
        Candidate("N1", Note(content="Maya runs marathons.", context="Maya is a runner."), 0.7),
        Candidate("N2", Note(content="Jonas moves to Lisbon."), 0.3),
    ]
    prompt = note.render(new, cands, ["N1"])
    text = prompt.messages[-1].content
    assert text.startswith(note.INSTRUCTIONS)  # instructions first: the KV cache prefix is shared
    assert text.rstrip().endswith("Answer:")
    assert "N1 [" in text and "UPDATABLE: N1" in text and cands[0].note.id not in text
    props = prompt.schema["properties"]
    assert props["links"]["items"]["properties"]["to"]["enum"] == ["N1", "N2"]
    assert props["updates"]["items"]["properties"]["note"]["enum"] == ["N1"]
    assert props["keywords"]["maxItems"] == 6  # every array and string is bounded
    assert prompt.version == note.VERSION and prompt.step == "construct"


def test_example_aliases_cannot_be_real_aliases() -> None:
    assert "R1" in note.INSTRUCTIONS and "N1" not in note.INSTRUCTIONS
    assert "A1" in batch.INSTRUCTIONS and "T1 [" not in batch.INSTRUCTIONS
    assert "P1" in evolve.INSTRUCTIONS and "N1" not in evolve.INSTRUCTIONS


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": 1}', {"a": 1}),
        ('Sure!\n```json\n{"a": [1, 2,]}\n```', {"a": [1, 2]}),
        ('prefix {"a": "brace } in string"} suffix', {"a": "brace } in string"}),
        ('{"a": True, "b": None}', {"a": True, "b": None}),
        ('{"nested": {"x": {"y": 1}}} and {"second": 2}', {"nested": {"x": {"y": 1}}}),
        ('{"context": "line one\nline two\tend"}', {"context": "line one\nline two\tend"}),
    ],
)
def test_tolerant_json(text: str, expected: dict[str, Any]) -> None:
    assert parse_json_object(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "no json here", '{"a": 1', "[1, 2, 3]", '{"a": nope}'])
def test_tolerant_json_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_json_object(text)


def test_schemas_are_valid_json() -> None:
    new = Note(content="x")
    for prompt in (note.render(new, [], []), analyse.render(new), batch.render([("T1", new)], [], [])):
        json.dumps(prompt.schema)
        assert prompt.schema["type"] == "object"


def test_repeated_sentences_from_decoding_loops_are_dropped() -> None:
    looped = "Maya signed up for the marathon. It is her first. It is her first. It is her first. It is her"
    out = parse_note({**GOOD, "context": looped})
    assert out.context == "Maya signed up for the marathon. It is her first."


def test_speaker_names_are_not_keywords() -> None:
    from amem.notes import LLMCall
    from amem.steps.guard import Checker, derived_keywords

    n = Note(content="Maya: I ran 25 km with Jonas.", metadata={"speaker": "Maya"})
    check = Checker(None, LLMCall(step="construct", prompt_version="v", model="m"), [n])
    assert check.keywords(n, ["Maya", "ran", "Jonas"]) == ["ran", "Jonas"]
    # never left without keywords, and never the speaker: derived from the note instead
    assert check.keywords(n, ["maya"]) == derived_keywords(n) == ["jonas"]


def test_context_sentences_borrowed_from_neighbours_are_dropped() -> None:
    from amem.steps.ground import Sources, check_text

    n = Note(content="Maya: I hope so. Meanwhile I'm swimming twice a week to keep fit.")
    borrowed = "Jonas accepted the Lisbon job at a shipping company. Maya is swimming twice a week."
    assert check_text(borrowed, Sources.of_notes([n])).text == "Maya is swimming twice a week."
    assert check_text("Unrelated words entirely.", Sources.of_notes([n])).text == ""


def test_evolution_must_keep_describing_the_neighbour() -> None:
    from amem.steps.guard import plausible_update

    neighbour = Note(content="Jon: Yeah definitely! Wanna see my moves next Fri? Can't wait!")
    pasted = "Jon says he's excited about the upcoming dance show at a nearby festival next month."
    assert not plausible_update(pasted, neighbour)
    offer = Note(
        content="Jonas: I'm still deciding whether to take the job offer in Lisbon by the end of the month."
    )
    assert plausible_update("Jonas accepted the Lisbon job offer after deciding in April.", offer)
