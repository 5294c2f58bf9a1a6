"""Bounded fuzzing (hypothesis) of what amem reads from outside: the LLM's answers and export files.

(a) Any text as an LLM answer: ``parse_json_object`` returns a dict or raises ValueError, and each prompt's
    output model, validated as ``LLMRunner._validate`` does (with the offered aliases as context), accepts
    it or raises ValueError/ValidationError; what it accepts names only offered aliases, within the caps,
    and holds only text every store can keep.
(b) Export files (tests/test_fuzz_import.py): mutated, they are imported whole or refused with
    InvalidInput, never another exception.

AMEM_FUZZ_EXAMPLES=N runs N examples per property (see tests/conftest.py).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from amem.llm.jsonparse import parse_json_object
from amem.llm.runner import LLMRunner, Prompt
from amem.notes import Note
from amem.prompts import analyse, batch, evolve, merge, note
from amem.prompts.common import Candidate

from .conftest import examples

# -- (a) the LLM-output parser and the prompts' output models ---------------------------------------

OFFERED = ["N1", "N2", "N3"]
UPDATABLE = ["N1", "N2"]
NEW = ["T1", "T2"]
ALIASES = [*OFFERED, *NEW, "N0", "N4", "N99", "R1", "R2", "A1", "P1", "T3", "n1", " N2 ", "N1 ", "*", ""]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(ALIASES),
    st.sampled_from(["\ud800", "a\x00b", "\x1b[31m", "same", "updates", "different", "strengthen"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25,
)

LINKS = st.lists(
    st.fixed_dictionaries({"to": st.sampled_from(ALIASES), "why": st.text(max_size=50) | json_values}),
    max_size=8,
)
SUPERSEDES = st.lists(st.sampled_from(ALIASES), max_size=5)
FIELDS = {
    "keywords": st.lists(st.text(max_size=50), max_size=12) | json_values,
    "tags": st.lists(st.text(max_size=40), max_size=10) | json_values,
    "context": st.text(max_size=400) | json_values,
    "links": st.lists(
        st.fixed_dictionaries({"to": st.sampled_from(ALIASES) | json_values, "why": json_values}), max_size=8
    )
    | json_values,
    "updates": st.lists(
        st.fixed_dictionaries(
            {"note": st.sampled_from(ALIASES), "context": st.text(max_size=300), "tags": json_values}
        ),
        max_size=5,
    )
    | json_values,
    "supersedes": st.lists(st.sampled_from(ALIASES), max_size=5) | json_values,
    "note": st.sampled_from(ALIASES) | json_values,
    "should_evolve": st.booleans() | json_values,
    "actions": st.lists(st.sampled_from(["strengthen", "update_neighbor", "delete"])) | json_values,
    "suggested_connections": st.lists(st.sampled_from(ALIASES), max_size=6) | json_values,
    "tags_to_update": json_values,
    "new_context_neighborhood": st.lists(st.text(max_size=100), max_size=4) | json_values,
    "new_tags_neighborhood": st.lists(st.lists(st.text(max_size=20), max_size=3), max_size=4) | json_values,
    "verdict": st.sampled_from(["same", "updates", "different", " SAME ", "delete"]) | json_values,
    "old_fact": st.text(max_size=100) | json_values,
    "new_fact": st.text(max_size=100) | json_values,
    "why": st.text(max_size=100) | json_values,
    "delete": json_values,
}


#: Valid attributes and verdicts, so that answers get past the attribute checks to the alias checks.
PLAUSIBLE = {
    "keywords": st.just(["library", "new job", "downtown"]),
    "tags": st.just(["work", "career"]),
    "context": st.just("Ana started a new job at the library downtown. She worked at the bakery before."),
    "verdict": st.sampled_from(["same", "updates", "different"]),
    "old_fact": st.just("works at the bakery"),
    "new_fact": st.just("works at the library"),
    "should_evolve": st.just(True),
    "actions": st.just(["strengthen", "update_neighbor"]),
}


def answer_objects() -> st.SearchStrategy[dict[str, Any]]:
    """Objects with a random subset of every step's fields (and extras), possibly nested as batch notes;
    half of them with plausible attributes, so that their links, updates and supersedes are judged."""
    wild = st.fixed_dictionaries({}, optional=FIELDS)
    plausible = st.fixed_dictionaries(
        dict(PLAUSIBLE), optional={k: v for k, v in FIELDS.items() if k not in PLAUSIBLE}
    )
    flat = wild | plausible
    entry = st.fixed_dictionaries(
        {"note": st.sampled_from(NEW) | FIELDS["note"], **PLAUSIBLE},
        optional={"links": LINKS, "supersedes": SUPERSEDES, "delete": json_values},
    )
    return st.one_of(
        flat,
        st.fixed_dictionaries(
            {"notes": st.lists(entry | flat, max_size=4)}, optional={"updates": FIELDS["updates"]}
        ),
    )


def batch_objects() -> st.SearchStrategy[dict[str, Any]]:
    """Batch answers with usable entries for T1, T2 and others, hostile links, supersedes and updates."""
    entry = st.fixed_dictionaries(
        {"note": st.sampled_from(NEW) | FIELDS["note"], **PLAUSIBLE},
        optional={"links": LINKS, "supersedes": SUPERSEDES, "delete": json_values},
    )
    updates = st.lists(
        st.fixed_dictionaries(
            {
                "note": st.sampled_from(ALIASES),
                "context": st.sampled_from(["Ana worked at the bakery on Elm Street until January.", "x"]),
                "tags": st.lists(st.text(max_size=10), max_size=3),
            }
        ),
        max_size=4,
    )
    return st.fixed_dictionaries(
        {"notes": st.lists(entry, min_size=1, max_size=4)}, optional={"updates": updates}
    )


def _mangle(text: str, how: str, at: int, junk: str) -> str:
    cut = at % (len(text) + 1)
    return {
        "as is": text,
        "truncated": text[:cut],
        "inserted": text[:cut] + junk + text[cut:],
        "fenced": f"Sure! Here it is:\n```json\n{text}\n```\nAnything else?",
        "prose": f"{junk} {text} {junk}",
        "python": text.replace("true", "True").replace("null", "None").replace("]", ",]"),
        "twice": text + "\n" + text,
        "nested deep": '{"links": ' + "[" * 5000 + "]" * 5000 + "}",
    }[how]


answer_texts = st.one_of(
    st.text(max_size=500),
    st.builds(
        _mangle,
        answer_objects().map(json.dumps),
        st.sampled_from(
            ["as is"] * 4 + ["truncated", "inserted", "fenced", "prose", "python", "twice", "nested deep"]
        ),
        st.integers(0, 10_000),
        st.text(max_size=10),
    ),
)


batch_texts = st.builds(
    _mangle,
    batch_objects().map(json.dumps),
    st.sampled_from(["as is"] * 6 + ["truncated", "inserted", "fenced", "python"]),
    st.integers(0, 10_000),
    st.text(max_size=10),
)


def _note(content: str, day: int) -> Note:
    return Note(content=content, event_time=datetime(2024, 1, day, tzinfo=timezone.utc))


def rendered_prompts() -> list[Prompt[Any]]:
    """Every write-side prompt, rendered with real candidates, as the pipeline renders them."""
    new = _note("Ana started a new job at the library downtown", 9)
    cands = [
        Candidate(alias, _note(f"Ana works at the bakery on Elm Street ({alias})", i), 0.9 - i / 10)
        for i, alias in enumerate(OFFERED, start=1)
    ]
    return [
        note.render(new, cands, UPDATABLE),
        note.render(new, [], []),
        batch.render([(a, _note(f"Ana new note {a}", 9)) for a in NEW], cands, UPDATABLE),
        evolve.render(new, cands),
        analyse.render(new),
        merge.render(cands[0].note, new),
    ]


PROMPTS = rendered_prompts()


def all_text_storable(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(all_text_storable(k) and all_text_storable(v) for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return all(all_text_storable(v) for v in value)
    return True


def check_output(prompt: Prompt[Any], out: BaseModel) -> None:
    """What a validated answer may contain: only offered aliases, never more than the caps."""
    ctx = prompt.context or {}
    assert all_text_storable(out.model_dump())
    if isinstance(out, note.NoteOutput):
        assert {lk.to for lk in out.links} <= set(ctx["link_aliases"])
        assert len(out.links) <= note.MAX_LINKS and len({lk.to for lk in out.links}) == len(out.links)
        assert {u.note for u in out.updates} <= set(ctx["update_aliases"])
        assert len(out.updates) <= note.MAX_UPDATES
        assert set(out.supersedes) <= set(ctx["update_aliases"]) and len(out.supersedes) <= 1
        assert out.keywords and out.tags and len(out.context) >= 8
    elif isinstance(out, batch.BatchOutput):
        new = set(ctx["new_aliases"])
        entries = [e.note for e in out.notes]
        assert set(entries) <= new and len(entries) == len(set(entries)) and entries
        for e in out.notes:
            assert {lk.to for lk in e.links} <= (set(ctx["link_aliases"]) | new) - {e.note}
            assert set(e.supersedes) <= set(ctx["update_aliases"])
            assert e.usable()
        assert {u.note for u in out.updates} <= set(ctx["update_aliases"])
    elif isinstance(out, evolve.EvolveOutput):
        assert set(out.suggested_connections) <= set(ctx["aliases"])
        n = len(ctx["aliases"])
        assert len(out.new_context_neighborhood) in (0, n) and len(out.new_tags_neighborhood) in (0, n)
        assert set(out.actions) <= {"strengthen", "update_neighbor"}
    elif isinstance(out, merge.MergeOutput):
        assert out.verdict in ("same", "updates", "different")


@settings(max_examples=examples(300))
@given(text=st.text())
@example(text="{" * 100_000)
@example(text='{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
@example(text='{"a": "\\ud800"}')
@example(text="```json\n" * 1000)
def test_parser_returns_an_object_or_value_error(text: str) -> None:
    try:
        value = parse_json_object(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert isinstance(value, dict)
    assert all_text_storable(value)


def test_parser_survives_deep_nesting_and_lone_surrogates() -> None:
    """Before the fix: RecursionError escaped (an LLM answer of 5,000 nested brackets made `add` raise it
    instead of keeping the note pending), and "\\ud800" came back as a str no store can encode."""
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_json_object('{"links": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert parse_json_object('{"k": ["a\\ud800b", "\\ud83d\\ude00"]}') == {"k": ["a\ufffdb", "\U0001f600"]}


@settings(max_examples=examples(400))
@given(text=answer_texts, which=st.integers(0, len(PROMPTS) - 1))
def test_every_prompt_validates_or_refuses_any_answer(text: str, which: int) -> None:
    prompt = PROMPTS[which]
    try:
        out = LLMRunner._validate(prompt, text)
    except (ValueError, ValidationError):  # ValidationError is a ValueError; both mean "repair"
        event(f"{prompt.step}: refused")
        return
    event(f"{prompt.step}: accepted")
    check_output(prompt, out)


@settings(max_examples=examples(150))
@given(text=batch_texts)
def test_batch_answers_link_only_offered_notes(text: str) -> None:
    prompt = PROMPTS[2]
    try:
        out = LLMRunner._validate(prompt, text)
    except (ValueError, ValidationError):
        event("construct_batch: refused")
        return
    event("construct_batch: accepted")
    check_output(prompt, out)
