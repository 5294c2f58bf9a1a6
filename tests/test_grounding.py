"""Nothing invented is stored: an adversarial LLM that invents facts, copies the prompt's example, loops,
parrots link reasons, updates the wrong note and reverts newer facts, on both stores and every write
step; and the grounding rule itself on outputs the default local model really wrote."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from amem import Memory
from amem.cli import cli
from amem.llm.base import Message
from amem.llm.fake import FakeLLM
from amem.notes import LLMCall, Note, NoteStatus, VersionCause
from amem.steps import ground, guard
from amem.steps.ground import Sources, check_text

from .conftest import make_memory

T0 = datetime(2024, 3, 4, 18, 0, tzinfo=timezone.utc)
#: words the adversary invents: none of them is in any note, so none may be stored
INVENTED = {"tokyo", "lottery", "priya", "sister", "driving", "zeppelin", "1999"}
CONVERSATION = [
    "Maya: I signed up for the Berlin marathon in September. It will be my first full marathon!",
    "Jonas: I'm still deciding whether to take the job offer in Lisbon.",
    "Maya: I started training yesterday with a slow 8 km run along the canal with my dog Pretzel.",
    "Jonas: I accepted the Lisbon job offer! I start in June.",
    "Maya: I twisted my ankle on Sunday; no running for three weeks.",
    "Jonas: Oh no, will you still make it to the Berlin marathon?",
    "Maya: Thanks! Pretzel and I walk along the canal instead.",
]


def note_of(text: str, days: int = 0) -> Note:
    return Note(content=text, event_time=T0 + timedelta(days=days))


# -- the rule, on what the default local model wrote (issue: trustworthy memory) ------------------------
def test_the_prompts_example_never_reaches_a_note() -> None:
    maya = note_of(
        "Maya: I started training yesterday with a slow 8 km run along the canal with my dog Pretzel."
    )
    leaked = (
        "Maya started training with her dog Pretzel. She was happy to hear that she passed her driving test "
        "on 13 March 2022 after failing it before."
    )
    out = check_text(leaked, Sources.of_notes([maya]), ground.prompt_leaks())
    assert out.text == "Maya started training with her dog Pretzel."
    assert any("driving" in p for p in out.problems)


def test_loops_and_padding_are_cut() -> None:
    note = note_of(
        "Maya: I signed up for the Berlin marathon in September. It will be my first full marathon!"
    )
    looped = (
        "Maya signed up for the Berlin marathon, which will be her first full marathon in September 2024, "
        "which will be her first full marathon in September 2024, which will be her first"
    )
    out = check_text(looped, Sources.of_notes([note]))
    assert out.text.count("first full marathon") == 1 and not ground.has_loop(out.text)
    padded = "Maya signed up for the Berlin marathon, indicating a positive social context."
    assert check_text(padded, Sources.of_notes([note])).text == "Maya signed up for the Berlin marathon."
    dated = "Maya signed up on 4 March 2024, which is 2 days ago, according to the new note's date."
    assert check_text(dated, Sources.of_notes([note])).text == "Maya signed up on 4 March 2024."


def test_a_context_about_another_note_or_person_is_dropped() -> None:
    jonas = note_of("Jonas: Oh no, will you still make it to the Berlin marathon?")
    src = Sources.of_notes([jonas], ["Maya", "Jonas"])
    assert check_text("Jonas twisted his ankle before the Berlin marathon.", src).text == ""
    # resolved dates, speech-act framing and one paraphrase word are allowed
    ok = "Jonas asks Maya on 4 March 2024 whether she will still make the Berlin marathon race."
    assert check_text(ok, src).text == ok
    # names and numbers are never a paraphrase
    assert check_text("Jonas asks about the Boston marathon.", src).text == ""
    assert check_text("Jonas asks about the marathon in 1999.", src).text == ""


def test_evolution_is_monotone() -> None:
    offer = note_of(
        "Jonas: I'm still deciding whether to take the job offer in Lisbon; they want an answer by the end."
    )
    offer.context, offer.version = "Jonas is deciding whether to take the job offer in Lisbon by the end.", 1
    accepted = note_of("Jonas: I accepted the Lisbon job offer! I start in June.", 10)
    better = "Jonas was deciding about the job offer in Lisbon and accepted it, starting in June."
    assert guard.monotone(offer, accepted, better, []) is None
    about_new = "Jonas starts a new job in June."
    assert "another note" in (guard.monotone(offer, accepted, about_new, []) or "")
    dropped = "Jonas accepted the job offer and starts in June."
    assert "drops" in (guard.monotone(offer, accepted, dropped, []) or "")
    same = "Jonas is deciding whether to take the job offer in Lisbon."
    assert "adds nothing" in (guard.monotone(offer, accepted, same, []) or "")
    # v2 says he accepted; a later unrelated note must not put v1's state back
    from amem.notes import NoteVersion

    v1 = NoteVersion(note_id=offer.id, cause=VersionCause.create, **offer.model_dump(exclude={"id"}))
    evolved = offer.model_copy(update={"context": better, "version": 2})
    later = note_of("Jonas: I'm still not sure about the apartment in Lisbon.", 20)
    revert = "Jonas is still deciding whether to take the job offer in Lisbon, not sure about the apartment."
    assert "reverts" in (guard.monotone(evolved, later, revert, [v1]) or "")


def test_link_reasons_must_name_what_both_notes_share() -> None:
    a = note_of("Maya: I signed up for the Berlin marathon in September.")
    b = note_of("Jonas: Oh no, will you still make it to the Berlin marathon?", 5)
    check = guard.Checker(None, LLMCall(step="construct", prompt_version="v", model="m"), [a, b])
    assert check.reason(b, a, "same Berlin marathon") == "same Berlin marathon"
    assert check.reason(b, a, "same sister and driving test") == "both mention Berlin, marathon"
    assert [r.action for r in check.call.refused] == ["derived"]


def test_tags_on_most_notes_are_refused() -> None:
    counts = {"family": 9, "travel": 2}
    stats = guard.TagStats(lambda scope: (20, dict(counts)))
    n = note_of("Maya: We flew to Lisbon to see the new flat.")
    check = guard.Checker(None, LLMCall(step="construct", prompt_version="v", model="m"), [n], stats)
    assert check.tags(n, ["family", "general", "travel"], ["Lisbon"]) == ["travel"]
    assert check.tags(n, ["family"], ["Lisbon", "flat"]) == ["lisbon"]  # derived when none is left
    assert guard.tag_limit(20) == 8  # 40% of 21, counting the new note, rounded down


# -- an adversarial LLM on both stores ---------------------------------------------------------------
def _aliases(prompt: str, prefix: str) -> list[str]:
    return sorted(set(re.findall(rf"^({prefix}\d+) \[", prompt, re.M)))


def adversary(messages: list[Message], schema: dict[str, Any] | None) -> dict[str, Any]:
    """Invents, copies the example, loops, parrots reasons, rewrites the wrong note, reverts."""
    prompt = messages[-1].content
    props = (schema or {}).get("properties", {})
    invented = "Maya won the lottery in Tokyo with her sister Priya in 1999."
    looped = "Maya trains hard, " * 8
    copied = "She passed her driving test on 13 March 2022 after failing it before."
    if set(props) == {"context"}:  # the repair call: invents again
        return {"context": invented}
    if "verdict" in props:
        return {"verdict": "same", "old_fact": "", "new_fact": "", "why": "both about the Tokyo zeppelin"}
    if "should_evolve" in props:  # the paper pipeline's evolution call
        n = len(_aliases(prompt, "N"))
        return {
            "should_evolve": True,
            "actions": ["strengthen", "update_neighbor"],
            "suggested_connections": _aliases(prompt, "N"),
            "tags_to_update": ["family"],
            "new_context_neighborhood": [invented] * n,
            "new_tags_neighborhood": [["family", "lottery"]] * n,
        }
    attrs = {
        "keywords": ["lottery", "Tokyo", "driving test"],
        "tags": ["family", "general", "sister"],
        "context": f"{invented} {copied} {looped}",
    }
    updatable = (
        props.get("updates", {}).get("items", {}).get("properties", {}).get("note", {}).get("enum", [])
    )
    updates = [
        {"note": alias, "context": f"{invented} She is still deciding.", "tags": ["lottery"]}
        for alias in updatable
    ]
    links = [{"to": a, "why": "same sister and driving test"} for a in _aliases(prompt, "N")]
    if "notes" in props:  # a batch
        entries = [{"note": a, **attrs, "links": links, "supersedes": []} for a in _aliases(prompt, "T")]
        return {"notes": entries, "updates": updates}
    out: dict[str, Any] = {**attrs}
    if "links" in props:
        out["links"] = links
    if "updates" in props:
        out["updates"] = updates
        out["supersedes"] = []
    return out


def _stored_texts(m: Memory) -> list[str]:
    texts: list[str] = []
    for n in m.store.iter_notes(m.scope):
        texts += [n.context, *n.keywords, *n.tags]
        texts += [v.context for v in m.history(n.id)] + [
            t for v in m.history(n.id) for t in v.tags + v.keywords
        ]
        texts += [lk.reason for lk in m.links(n.id)]
    return texts


def _assert_nothing_invented(m: Memory) -> None:
    for text in _stored_texts(m):
        words = {w.lower() for w in ground.tokens(text)}
        assert not words & INVENTED, text
        assert not ground.has_loop(text), text
    report = m.audit()
    assert report.leaks.count == 0 and report.loops.count == 0
    assert report.contexts.share_grounded == 1.0
    assert report.updates.checked == 0 or report.updates.share_grounded == 1.0
    assert report.refusals.calls_with_refusals > 0  # and every refusal stays inspectable


@pytest.mark.parametrize("pipeline", ["amem", "paper"])
def test_an_adversarial_llm_stores_nothing_invented(store_url: str, tmp_path: Any, pipeline: str) -> None:
    m = make_memory(
        store_url, tmp_path, FakeLLM(handler=adversary), pipeline=pipeline, evolve_floor=0.0, link_floor=-1.0
    )
    try:
        for i, text in enumerate(CONVERSATION):
            m.add(text, event_time=T0 + timedelta(days=i))
        _assert_nothing_invented(m)
        refused = [r for c in m.llm_calls() for r in c.refused]
        assert {"context", "keywords", "tags"} <= {r.field for r in refused}
        assert all(r.action in {"dropped", "cut", "repaired", "derived", "refused"} for r in refused)
        assert all(n.version == 1 or pipeline == "amem" for n in m.list())  # no invented update applied
        assert not any(v.cause == VersionCause.evolve for n in m.list() for v in m.history(n.id))
        if pipeline == "amem":
            assert any(r.field == "link" and r.action == "derived" for r in refused)
            assert any(r.field == "update" and r.action == "refused" for r in refused)
            assert all(c.step in {"construct", "repair"} for c in m.llm_calls())
    finally:
        m.close()


def test_adversarial_batches_enrich_and_merges_store_nothing_invented(store_url: str, tmp_path: Any) -> None:
    m = make_memory(store_url, tmp_path, FakeLLM(handler=adversary), evolve_floor=0.0, link_floor=-1.0)
    pending = make_memory(store_url, tmp_path, None)
    try:
        m.add_many([{"content": t, "event_time": T0 + timedelta(days=i)} for i, t in enumerate(CONVERSATION)])
        later = pending.add("Maya: Pretzel and I walk along the canal every evening now.", event_time=T0)
        assert m.enrich().enriched == 1 and m.get(later.id).context
        m.add("Maya: Thanks!! Pretzel and I walk along the canal instead.", event_time=T0 + timedelta(days=9))
        m.consolidate(as_of=T0 + timedelta(days=30))
        _assert_nothing_invented(m)
        merges = [
            v for n in m.store.iter_notes(m.scope) for v in m.history(n.id) if v.cause == VersionCause.merge
        ]
        assert all("zeppelin" not in v.detail.lower() for v in merges)
    finally:
        pending.close()
        m.close()


def test_a_revert_is_refused_and_kept_in_the_call_record(store_url: str, tmp_path: Any) -> None:
    llm = FakeLLM()
    m = make_memory(store_url, tmp_path, llm, evolve_floor=0.0, link_floor=-1.0)
    try:
        offer = m.add("Jonas: I'm still deciding whether to take the job offer in Lisbon.", event_time=T0)
        llm.script = [
            {
                "keywords": ["job offer"],
                "tags": ["work"],
                "context": "Jonas accepted the Lisbon job offer.",
                "links": [],
                "updates": [
                    {
                        "note": "N1",
                        "context": "Jonas decided and accepted the job offer in Lisbon.",
                        "tags": ["work"],
                    }
                ],
                "supersedes": [],
            }
        ]
        m.add("Jonas: I accepted the Lisbon job offer!", event_time=T0 + timedelta(days=3))
        assert m.get(offer.id).version == 2 and "accepted" in m.get(offer.id).context
        llm.script = [
            {
                "keywords": ["apartment"],
                "tags": ["housing"],
                "context": "Jonas is not sure about the apartment in Lisbon.",
                "links": [],
                "updates": [
                    {
                        "note": "N1",
                        "context": "Jonas is still deciding whether to take the job offer in Lisbon "
                        "and the apartment.",
                        "tags": ["work"],
                    },
                    {"note": "N2", "context": "Jonas is still deciding about the offer.", "tags": []},
                ],
                "supersedes": [],
            }
        ]
        third = m.add(
            "Jonas: I'm still not sure about the apartment in Lisbon.", event_time=T0 + timedelta(days=9)
        )
        assert m.get(offer.id).version == 2  # v2's accepted offer stands
        assert all("accepted" in n.context for n in m.list() if n.id != third.id)
        call = m.llm_calls(third.id)[0]
        reasons = [r.reason for r in call.refused if r.field == "update"]
        assert any("reverts" in r or "drops" in r for r in reasons), reasons
        assert all(r.note_id for r in call.refused)
    finally:
        m.close()


# -- the audit, from the library, the CLI and REST --------------------------------------------------
def test_audit_counts_what_a_careless_store_holds(tmp_path: Any) -> None:
    m = make_memory(tmp_path / "a.db")
    try:
        for i, text in enumerate(CONVERSATION[:4]):
            note = m.add(text, event_time=T0 + timedelta(days=i))
            # hand edits bypass the LLM checks: what a store written by older code may hold
            m.update(
                note.id, context="She passed her driving test in Tokyo. " * 2, tags=["family"], keywords=["x"]
            )
        report = m.audit(examples=2)
        assert report.notes == 4 and report.contexts.checked == 4 and report.contexts.share_grounded == 0.0
        assert report.leaks.count >= 4 and report.loops.count == 4
        assert report.tags.max_share == 1.0 and report.tags.over_limit == ["family"]
        assert len(report.contexts.examples) == 2
    finally:
        m.close()


def test_audit_from_the_cli_and_rest(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMEM_HOME", str(tmp_path))
    monkeypatch.setenv("AMEM_LLM", "fake")
    monkeypatch.setenv("AMEM_EMBEDDER", "fake:64")
    runner = CliRunner()
    for text in CONVERSATION[:3]:
        assert runner.invoke(cli, ["add", text]).exit_code == 0
    out = runner.invoke(cli, ["audit", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["notes"] == 3 and data["leaks"]["count"] == 0 and data["contexts"]["checked"] == 3
    human = runner.invoke(cli, ["audit"]).output
    assert "contexts: 3 checked" in human and "example leaks: 0" in human
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from amem.server.api import create_app

    with Memory() as memory, TestClient(create_app(memory)) as client:
        body = client.get("/v1/audit?examples=1").json()
        assert body["notes"] == 3 and body["tags"]["notes"] == 3
        assert client.get("/v1/audit?examples=1000").status_code == 422


def test_archived_notes_are_audited_but_tags_count_active_notes(tmp_path: Any) -> None:
    m = make_memory(tmp_path / "b.db")
    try:
        a = m.add(CONVERSATION[0], event_time=T0)
        m.add(CONVERSATION[1], event_time=T0)
        m.archive(a.id)
        report = m.audit()
        assert report.notes == 2 and report.tags.notes == 1
        assert m.get(a.id).status == NoteStatus.archived
    finally:
        m.close()


def test_the_rule_on_contexts_the_default_model_wrote() -> None:
    """Contexts Qwen2.5-Coder-1.5B wrote for the demo conversation (prompts note-v6 and repair-v2): what
    was stored passes unchanged; what the checks refused whole (a neighbour's facts, an invented "Lisa",
    a "last Saturday" resolved to 19 June) is refused again."""
    cases = json.loads((Path(__file__).parent / "data" / "qwen_contexts.json").read_text())
    assert sum(not c["grounded"] for c in cases) >= 5 and sum(c["grounded"] for c in cases) >= 10
    for case in cases:
        note = Note(content=case["note"], event_time=datetime.fromisoformat(case["event_time"].rstrip("Z")))
        verdict = check_text(case["text"], Sources.of_notes([note], ["Maya", "Jonas"]), ground.prompt_leaks())
        if case["grounded"]:
            assert verdict.text == case["text"] and not verdict.problems, case
        else:
            assert verdict.text == "", case


def test_history_shows_what_the_checks_kept_out(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMEM_HOME", str(tmp_path))
    monkeypatch.setenv("AMEM_LLM", "fake")
    monkeypatch.setenv("AMEM_EMBEDDER", "fake:64")
    runner = CliRunner()
    added = json.loads(runner.invoke(cli, ["add", CONVERSATION[0], "--json"]).output)
    human = runner.invoke(cli, ["history", added["id"]]).output
    assert "kept out by the grounding checks" in human
    assert "tags dropped" in human and "general" in human  # the fake LLM's meta tag


def test_derived_reasons_leave_the_speakers_out_and_tell_links_apart() -> None:
    gina = note_of("Gina: Hey Jon! I found a cool new fashion piece for my store.")
    jon = note_of("Jon: Thanks, Gina! Your words mean a lot, I won't give up on the studio.")
    names = ["Gina", "Jon"]
    check = guard.Checker(None, LLMCall(step="construct", prompt_version="v", model="m"), [gina, jon])
    assert check.reason(jon, gina, "same Jon and Gina") == guard.derived_reason(jon, gina, names)
    reason = guard.derived_reason(jon, gina, names)
    assert "Jon" not in reason and "Gina" not in reason
    assert reason == "same conversation (4 March 2024): studio and fashion"
    later = note_of("Jon: The studio floor is done!", 9)
    assert guard.derived_reason(later, jon, names) == "both mention studio"
    assert check.tags(jon, ["gina", "studio"], ["studio"]) == ["studio"]  # a speaker is no topic


def test_a_link_reason_is_the_links_own_and_names_no_speaker_of_the_scope() -> None:
    """Measured on conv-30 (first 7 sessions): "Jon's passion for dancing" on 8 links, "both mention Jon"
    on 7 links between two of Gina's notes that greet him, "both mention Wow" on 5."""
    stats = guard.TagStats(lambda scope: (0, {}))
    call = LLMCall(step="construct", prompt_version="v", model="m")
    jon = note_of("Jon: I've been into dancing since I was a kid, it's my passion.")
    guard.Checker(None, call, [jon], stats)  # Jon has spoken in this scope
    greet = note_of("Gina: Wow Jon, you're so talented! What dance show ya got planned?", 3)
    cheer = note_of("Gina: Wow, Jon! Good luck with the dance show next week.", 3)
    check = guard.Checker(None, call, [greet, cheer], stats)
    assert check.people == ["Gina", "Jon"] and check.names == ["Gina"]
    first = check.reason(cheer, greet, "Jon's dance show")
    assert first == "Jon's dance show"
    again = check.reason(cheer, greet, "Jon's dance show")  # a second link may not say the same
    assert again == "both mention dance, show"
    assert "Jon" not in again and "Wow" not in again
    third = check.derived_reason(cheer, greet)
    assert third.startswith("both mention dance, show: ") and third != again
    assert check.call.refused[-1].reason == "already the reason of another link"
    hello = note_of("Gina: Wow, hey Jon!", 4)
    assert guard.derived_reason(hello, greet, check.people) == "follows up on 7 March 2024: talented"
    assert "wow" not in guard.derived_keywords(hello)


def test_a_cut_loop_leaves_no_dangling_word() -> None:
    note = note_of("Gina: Absolutely Jon. I'm always here to cheer you on and support you.")
    looped = "Gina says she's always here to cheer Jon on, and she's always here to support him."
    out = check_text(looped, Sources.of_notes([note], ["Gina", "Jon"]))
    assert out.text == "Gina says she's always here to cheer Jon on."


def test_the_paraphrase_allowance_is_per_field() -> None:
    note = note_of("Maya: Thanks so much, that helps!")
    src = Sources.of_notes([note], ["Maya", "Jonas"])
    one = "Maya thanks Jonas warmly."
    assert check_text(one, src).text == one
    two = "Maya thanks Jonas warmly. She feels relieved."  # a second unsupported word in the field
    assert check_text(two, src).text == one


def test_digits_that_are_no_numbers_do_not_break_the_checks() -> None:
    """Found by the prompt-injection fuzz: '²' is a digit to str.isdigit, but int() cannot read it."""
    note = note_of("Maya: x² and ٣ apples")
    src = Sources.of_notes([note])
    assert check_text("Maya says x² and ٣ apples on 4 March 2024.", src).text
    assert check_text("², ٣, 12 and 1st", src) is not None
    assert guard.derived_keywords(note) and guard.monotone(note, note, "x² ٣", []) is not None


def test_a_context_may_not_give_a_turn_to_someone_else() -> None:
    """Read on conv-41 with the default Qwen: John's "I'm doing kickboxing" evolved to "Maria says she's
    doing kickboxing", and a cut loop left "Maria asks John if." Every word was the turns' own."""
    stats = guard.TagStats(lambda scope: (0, {}))
    call = LLMCall(step="construct", prompt_version="v", model="m")
    maria = note_of("Maria: Been busy volunteering at the homeless shelter and keeping fit.")
    john = note_of(
        "John: Woah, Maria, that sounds cool! I'm doing kickboxing and it's giving me so much energy."
    )
    check = guard.Checker(None, call, [maria, john], stats)
    wrong = "Maria says she's doing kickboxing and it's giving her so much energy."
    assert check.context(john, wrong, ["kickboxing"]) == guard.derived_context(john, ["kickboxing"])
    assert "not by John" in check.call.refused[-1].reason
    right = "John says he's doing kickboxing and it's giving him so much energy."
    assert check.context(john, right, ["kickboxing"]) == right
    both = f"{right} Maria asks how he keeps fit."
    assert check.context(john, both, ["kickboxing"]) == right  # the other sentence goes, this one stays
    assert check.update(john, maria, wrong, []) is None
    looped = "Maria asks John if he is fine. Maria asks John if"
    assert (
        check_text(looped, Sources.of_notes([maria], ["Maria", "John"])).text
        == "Maria asks John if he is fine."
    )
    assert ground.cut_loop("Maria asks John if Maria asks John if he")[0] == "Maria asks John"  # no "if."
    assert (
        check_text("Maria asks John if.", Sources.of_notes([maria], ["Maria", "John"])).text
        == "Maria asks John."
    )
