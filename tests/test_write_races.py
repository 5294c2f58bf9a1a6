"""Writes that race or die half-way, on both stores: the same content added by several writers at once is
one note carrying every writer's provenance; a kill inside ``add_many`` never loses the links between the
notes of a batch that were stored; an LLM outage costs no enrichment attempt and stops ``enrich`` at once."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import amem.pipeline
from amem import Memory, VersionCause
from amem.bench.integrity import check_store
from amem.embed.fake import FakeEmbedder
from amem.errors import LLMUnavailable
from amem.llm.base import Message
from amem.llm.fake import FakeLLM, schema_answer
from amem.notes import EnrichState, Note, NoteStatus
from amem.store import Filters

from .conftest import make_memory

CONTENTS = [f"Fact {n}: Maria moved her pottery class to Thursday number {n}." for n in range(8)]


def _active(mem: Memory) -> list[Note]:
    return mem.list(limit=1000, filters=Filters(statuses=[NoteStatus.active]))


# -- 1. the same content from several writers at once ------------------------------------------------
class RivalEmbedder(FakeEmbedder):
    """Runs ``rival`` once, the first time it embeds: after ``add`` looked for a duplicate and before it
    writes, exactly where another writer's commit used to slip in unseen."""

    def __init__(self, rival: Callable[[], object]) -> None:
        super().__init__(64)
        self.rival: Callable[[], object] | None = rival

    def embed_documents(self, texts: list[str]) -> Any:
        rival, self.rival = self.rival, None
        if rival is not None:
            rival()
        return super().embed_documents(texts)


WAYS = {
    "add": (True, None, False),
    "add-llm-unreachable": (True, LLMUnavailable("down"), False),
    "add-no-llm": (False, None, False),
    "add_many": (True, None, True),
    "add_many-llm-unreachable": (True, LLMUnavailable("down"), True),
    "add_many-no-llm": (False, None, True),
}


@pytest.mark.parametrize("way", sorted(WAYS))
def test_a_copy_stored_by_another_writer_meanwhile_is_folded_into(
    store_url: str, tmp_path: Path, way: str
) -> None:
    with_llm, fault, batch = WAYS[way]
    contents = CONTENTS[:3] if batch else CONTENTS[:1]
    rival = make_memory(store_url, tmp_path / "rival", None)

    def write_first() -> None:
        for content in contents:
            rival.add(content, metadata={"writer": "rival"})

    llm = FakeLLM([fault] if fault else None) if with_llm else None
    mem = make_memory(store_url, tmp_path / "home", llm, embedder=RivalEmbedder(write_first), batch_size=4)
    try:
        if batch:
            got = mem.add_many([{"content": c, "metadata": {"writer": "me"}} for c in contents])
        else:
            got = [mem.add(contents[0], metadata={"writer": "me"})]
        stored = _active(mem)
        assert len(stored) == len(contents)  # one note per content, not two
        by_content = {n.content: n for n in stored}
        assert [n.id for n in got] == [by_content[c].id for c in contents]
        for note in stored:  # the rival's note, with this write's provenance folded in
            assert note.metadata == {"writer": "rival"}
            assert note.all_metadata() == [{"writer": "rival"}, {"writer": "me"}]
        assert check_store(store_url).ok
    finally:
        mem.close()
        rival.close()


def test_dedupe_off_still_stores_every_copy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    rival = make_memory(url, tmp_path / "rival", None)
    embedder = RivalEmbedder(lambda: None)
    embedder.rival = lambda: rival.add(CONTENTS[0])
    with make_memory(url, tmp_path, embedder=embedder, options={"dedupe": False}) as mem:
        mem.add(CONTENTS[0])
        mem.add(CONTENTS[0])
        assert len(_active(mem)) == 3
    rival.close()


def _slow_llm() -> FakeLLM:
    """Answers after a pause, so that every writer is between its duplicate check and its write at once."""

    def answer(messages: list[Message], schema: dict[str, Any] | None) -> Any:
        time.sleep(0.02)
        return schema_answer(messages[-1].content, schema)

    return FakeLLM(handler=answer)


def _write_all(mem: Memory, name: str, batch: bool) -> None:
    """Every content, each with its own provenance; one call per note or one ``add_many``."""
    items: list[dict[str, Any]] = [{"content": c, "metadata": {"writer": name}} for c in CONTENTS]
    if batch:
        mem.add_many(items)
    else:
        for item in items:
            mem.add(item["content"], metadata=item["metadata"])


def _writer(url: str, home: str, name: str, batch: bool, barrier: Any, arrivals: Any) -> None:
    """A writer process: its own Memory, then it waits with every other writer and writes."""
    mem = make_memory(url, Path(home), _slow_llm(), batch_size=3)
    try:
        arrivals.put((name, barrier.wait(timeout=120)))
        _write_all(mem, name, batch)
    finally:
        mem.close()


def test_threads_and_processes_adding_the_same_contents_make_one_note_each(
    store_url: str, tmp_path: Path
) -> None:
    make_memory(store_url, tmp_path / "init").close()  # schema and embedder recorded before the race
    ctx = multiprocessing.get_context("spawn")
    writers = [f"p{n}" for n in range(2)] + [f"t{n}" for n in range(3)]
    # every writer, thread or process, waits here until all are ready (the processes need a moment to
    # import): none starts writing alone, however long spawning takes; a writer missing after 120 s
    # breaks the barrier and fails the test instead of letting the others write unraced
    barrier, arrivals = ctx.Barrier(len(writers)), ctx.Queue()
    procs = [
        ctx.Process(
            target=_writer, args=(store_url, str(tmp_path / name), name, n % 2 == 0, barrier, arrivals)
        )
        for n, name in enumerate(writers[:2])
    ]
    for p in procs:
        p.start()
    shared = make_memory(store_url, tmp_path / "threads", _slow_llm(), batch_size=3)  # the threads share it
    errors: list[BaseException] = []

    def thread_writer(name: str, batch: bool) -> None:
        try:
            arrivals.put((name, barrier.wait(timeout=120)))
            _write_all(shared, name, batch)
        except BaseException as exc:  # any error surfaced to a writer fails the test
            errors.append(exc)

    threads = [
        threading.Thread(target=thread_writer, args=(n, i % 2 == 1)) for i, n in enumerate(writers[2:])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for p in procs:
        p.join(120)
    assert errors == [] and [p.exitcode for p in procs] == [0, 0]
    # one release for all: each writer passed the barrier in the same round, with its own place in it
    released = dict(arrivals.get(timeout=10) for _ in writers)
    assert sorted(released) == sorted(writers)
    assert sorted(released.values()) == list(range(len(writers)))
    assert not barrier.broken
    notes = _active(shared)
    assert Counter(n.content for n in notes) == Counter(CONTENTS)  # exactly one note per content
    for note in notes:
        assert sorted(m["writer"] for m in note.all_metadata()) == sorted(writers)  # every write's provenance
    assert check_store(store_url).ok
    shared.close()


# -- 2. an LLM outage -------------------------------------------------------------------------------
def test_an_outage_costs_no_attempt_and_stops_enrich_at_the_first_call(tmp_path: Path) -> None:
    down = LLMUnavailable("connection refused")
    llm = FakeLLM(handler=lambda messages, schema: down)
    with make_memory(tmp_path / "m.db", llm=llm, batch_size=4) as mem:
        ids = [mem.add(c).id for c in CONTENTS[:2]]
        ids += [n.id for n in mem.add_many(CONTENTS[2:6])]
        assert len(llm.calls) == 3  # two adds, one batch call; nothing asked again
        for _ in range(4):  # more runs than MAX_ENRICH_ATTEMPTS while the provider stays down
            llm.calls.clear()
            report = mem.enrich()
            assert len(llm.calls) == 1  # the first call found the provider down: no other note was tried
            assert (report.enriched, report.still_pending, report.failed) == (0, 6, 0)
            assert report.stopped and "unreachable" in report.stopped and "5 more" in report.stopped
        for note in mem.store.get_notes(ids).values():
            assert note.state == EnrichState.pending and note.enrich_attempts == 0  # never marked failed
            assert "connection refused" in (note.last_error or "")
        llm.handler = None  # the provider is back
        report = mem.enrich()
        assert (report.enriched, report.still_pending, report.stopped) == (6, 0, None)


def test_a_note_edited_while_the_llm_works_is_enriched_again_not_left_pending(tmp_path: Path) -> None:
    llm = FakeLLM()
    with make_memory(tmp_path / "m.db", llm=None) as mem:
        note = mem.add("Maria moved her pottery class to Thursday")  # pending: no LLM yet

        def edit_during_the_first_call(messages: list[Message], schema: Any) -> Any:
            if len(llm.calls) == 1:  # another writer edits the note while the LLM works on it
                mem.update(note.id, metadata={"source": "calendar"})
            return schema_answer(messages[-1].content, schema)

        llm.handler = edit_during_the_first_call
        mem._llm, mem._runner = llm, None
        report = mem.enrich()
        assert (report.enriched, report.still_pending) == (1, 0)
        done = mem.get(note.id)
        assert done.state == EnrichState.enriched and done.metadata == {"source": "calendar"}  # edit kept
        # the first answer was not written over the edit; the newer version was enriched (the same
        # prompt, so the second answer came from the LLM cache)
        causes = [v.cause for v in mem.history(note.id)]
        assert causes == [VersionCause.create, VersionCause.update, VersionCause.enrich]


def test_unusable_answers_still_count_and_the_run_goes_on(tmp_path: Path) -> None:
    llm = FakeLLM(handler=lambda messages, schema: "not json")
    with make_memory(tmp_path / "m.db", llm=llm) as mem:
        ids = [mem.add(c).id for c in CONTENTS[:3]]
        llm.calls.clear()
        report = mem.enrich()
        assert len(llm.calls) == 6  # every note asked (answer + repair each): bad answers are no outage
        assert (report.still_pending, report.stopped) == (3, None)
        mem.enrich()
        assert {n.state for n in mem.store.get_notes(ids).values()} == {EnrichState.failed}


# -- 3. a kill inside add_many ----------------------------------------------------------------------
#: links the LLM decides among a batch of four (T1..T4): back, forward and both directions
BATCH_LINKS = {"T1": ["T3"], "T2": ["T1", "T4"], "T3": ["T2"], "T4": ["T1"]}


def _linking_llm() -> FakeLLM:
    def answer(messages: list[Message], schema: dict[str, Any] | None) -> Any:
        out = schema_answer(messages[-1].content, schema)
        if schema is not None and "notes" in schema["properties"]:  # the batch prompt
            aliases = [e["note"] for e in out["notes"]]
            for entry in out["notes"]:
                wanted = [t for t in BATCH_LINKS.get(entry["note"], []) if t in aliases]
                entry["links"] = [{"to": t, "why": f"{entry['note']} and {t} share a plan"} for t in wanted]
        return out

    return FakeLLM(handler=answer)


class Died(BaseException):
    """The process "dies": nothing after this point runs (not an Exception: nothing catches it)."""


def _die_after(monkeypatch: pytest.MonkeyPatch, k: int) -> Callable[[], None]:
    """The k-th note ``pipeline.apply`` stores is committed, then the writer dies; returns the healer."""
    original = amem.pipeline.apply
    stored: list[str] = []

    def apply(*args: Any, **kwargs: Any) -> Note:
        note = original(*args, **kwargs)
        stored.append(note.id)
        if len(stored) == k:
            raise Died
        return note

    monkeypatch.setattr(amem.pipeline, "apply", apply)
    return lambda: monkeypatch.setattr(amem.pipeline, "apply", original)


def _pairs(mem: Memory, ids: dict[str, str]) -> set[tuple[str, str]]:
    """The links among ``ids`` (alias -> note id) as alias pairs."""
    alias = {v: k for k, v in ids.items()}
    links = mem.store.links_for(list(ids.values()))
    return {
        (alias[lk.source_id], alias[lk.target_id])
        for lk in links
        if lk.target_id in alias and lk.source_id in alias
    }


@pytest.mark.parametrize("k", [2, 3])
def test_a_kill_inside_add_many_keeps_the_links_among_stored_notes(
    store_url: str, tmp_path: Path, k: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = CONTENTS[:4]
    mem = make_memory(store_url, tmp_path / "a", _linking_llm(), batch_size=4)
    heal = _die_after(monkeypatch, k)
    with pytest.raises(Died):
        mem.add_many(items)
    mem.close()
    heal()
    # restarted: the first k notes of the batch are stored, with every link the LLM made among them
    mem = make_memory(store_url, tmp_path / "b", _linking_llm(), batch_size=4)
    by_content = {n.content: n.id for n in _active(mem)}
    assert sorted(by_content) == sorted(items[:k])
    ids = {f"T{i}": by_content[c] for i, c in enumerate(items[:k], start=1)}
    decided = {(s, t) for s, targets in BATCH_LINKS.items() for t in targets if s in ids and t in ids}
    assert decided and _pairs(mem, ids) == decided
    for source, target in decided:  # the source's newest version records the link (history stays whole)
        newest = mem.store.versions(ids[source])[-1]
        assert ids[target] in {ls.target_id for ls in newest.links or []}
    assert check_store(store_url).ok
    # the rerun folds the stored notes and adds the rest as a batch of its own, linked as that call says
    again = mem.add_many(items)
    by_content = {n.content: n.id for n in _active(mem)}
    assert sorted(by_content) == sorted(items) and [n.id for n in again] == [by_content[c] for c in items]
    rest = {f"T{i}": by_content[c] for i, c in enumerate(items[k:], start=1)}  # the rerun's aliases
    decided_now = {(s, t) for s, targets in BATCH_LINKS.items() for t in targets if s in rest and t in rest}
    assert _pairs(mem, rest) == decided_now
    assert _pairs(mem, ids) == decided  # the first run's links are still there
    assert check_store(store_url).ok
    mem.close()


@pytest.mark.parametrize("own_call", ["answered", "unreachable"])
def test_a_link_to_a_note_left_out_of_the_batch_answer_is_written_with_it(
    store_url: str, tmp_path: Path, own_call: str
) -> None:
    """The batch answer links T1 to T2 but leaves T2 out: T2 gets its own call, and the link is written in
    T2's transaction whether that call works or finds the provider down (T2 then stays pending)."""

    def answer(messages: list[Message], schema: dict[str, Any] | None) -> Any:
        if schema is None or "notes" not in schema["properties"]:
            return (
                LLMUnavailable("down")
                if own_call == "unreachable"
                else schema_answer(messages[-1].content, schema)
            )
        out = schema_answer(messages[-1].content, schema)
        out["notes"] = [e for e in out["notes"] if e["note"] != "T2"]
        for entry in out["notes"]:
            entry["links"] = [{"to": "T2", "why": "same class"}] if entry["note"] == "T1" else []
        return out

    with make_memory(store_url, tmp_path, FakeLLM(handler=answer), batch_size=3) as mem:
        first, second, _ = mem.add_many(CONTENTS[:3])
        expected = EnrichState.enriched if own_call == "answered" else EnrichState.pending
        assert mem.get(second.id).state == expected
        assert ("T1", "T2") in _pairs(mem, {"T1": first.id, "T2": second.id})
        assert second.id in {ls.target_id for ls in mem.store.versions(first.id)[-1].links or []}
        assert check_store(store_url).ok


def test_amem_enrich_says_it_stopped_for_an_outage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from amem.cli import cli

    monkeypatch.setenv("AMEM_EMBEDDER", "fake")
    monkeypatch.setenv("AMEM_LLM", "none")
    for content in CONTENTS[:3]:
        assert CliRunner().invoke(cli, ["add", content]).exit_code == 0
    monkeypatch.setenv("AMEM_LLM", "openai:gone")  # nothing listens there: connection refused at once
    monkeypatch.setenv("AMEM_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("AMEM_LLM_MAX_RETRIES", "0")
    result = CliRunner().invoke(cli, ["enrich", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["enriched"], report["still_pending"], report["failed"]) == (0, 3, 0)
    assert "unreachable" in report["stopped"] and "2 more note(s)" in report["stopped"]
    assert "stopped early" in result.stderr
    text = CliRunner().invoke(cli, ["enrich"])
    assert "still pending 3" in text.stdout and "stopped early" in text.stderr
    monkeypatch.setenv("AMEM_LLM", "fake")  # back: a run that finishes says nothing of stopping
    healed = CliRunner().invoke(cli, ["enrich", "--json"])
    assert json.loads(healed.stdout) == {"enriched": 3, "still_pending": 0, "failed": 0}
