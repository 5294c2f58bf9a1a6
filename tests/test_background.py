"""Background enrichment: ``add(wait=False)`` returns once the note is stored (searchable, pending) and a
worker thread enriches it; nothing is lost on shutdown."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from amem import Memory
from amem.llm.base import Message
from amem.llm.fake import FakeLLM, schema_answer
from amem.notes import EnrichState

from .conftest import make_memory


class Gate:
    """An LLM handler that holds every call until the test opens the gate."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.calls = 0

    def __call__(self, messages: list[Message], schema: dict[str, Any] | None) -> Any:
        self.calls += 1
        self.entered.set()
        assert self.open.wait(10), "the test never opened the gate"
        return schema_answer(messages[-1].content, schema)


def test_add_returns_before_the_llm_answers_and_the_note_is_searchable(tmp_path: Path) -> None:
    gate = Gate()
    mem = make_memory(tmp_path / "m.db", llm=FakeLLM(handler=gate), user_id="ana")
    try:
        first = mem.add("Ana: I adopted a grey cat called Miso last week.", wait=False)
        assert gate.entered.wait(5)  # the worker is inside the LLM call, the caller is not
        second = mem.add("Ana: Miso sleeps on my keyboard every morning.", wait=False)
        assert {first.state, second.state} == {EnrichState.pending}
        assert {h.note.id for h in mem.search("Miso keyboard", k=5)} >= {second.id}  # searchable at once
        assert mem.background.status().running
        gate.open.set()
        assert mem.background.wait(10)
        assert mem.get(first.id).state == mem.get(second.id).state == EnrichState.enriched
        assert mem.get(second.id).context  # enriched by the same pipeline as a waited add
        status = mem.background.status()
        assert (status.added, status.enriched, status.failed, status.scopes_waiting) == (2, 2, 0, 0)
    finally:
        gate.open.set()
        mem.close()


def test_scopes_are_enriched_oldest_first_each_and_by_setting(tmp_path: Path) -> None:
    mem = make_memory(tmp_path / "m.db", options={"enrich_in_background": True})
    try:
        ana, ben = mem.scoped(user_id="ana"), mem.scoped(user_id="ben")
        notes = [ana.add(f"Ana: note {i} about gardening tomatoes") for i in range(3)]
        notes += ben.add_many(["Ben: I sold my bike", "Ben: I bought a kayak"])
        assert all(n.state == EnrichState.pending for n in notes)
        assert ana.background is ben.background  # one worker per memory, shared by its views
        assert mem.background.wait(10)
        assert all(mem.get(n.id).state == EnrichState.enriched for n in notes)
        calls = [c for c in mem.store.llm_calls(limit=100) if c.step == "construct"]
        order = [c.note_ids[0] for c in sorted(calls, key=lambda c: c.created_at)]
        ana_order = [i for i in order if i in {n.id for n in notes[:3]}]
        assert ana_order == [n.id for n in notes[:3]]  # the order evolution needs
        assert ana.add("Ana: waited for", wait=True).state == EnrichState.enriched
    finally:
        mem.close()


def test_close_stops_after_the_note_in_hand_and_the_rest_is_finished_later(tmp_path: Path) -> None:
    gate = Gate()
    path = tmp_path / "m.db"
    mem = make_memory(path, llm=FakeLLM(handler=gate), user_id="ana")
    ids = [mem.add(f"Ana: fact number {i} about the Lisbon flat", wait=False).id for i in range(4)]
    assert gate.entered.wait(5)
    closing = threading.Thread(target=mem.close)
    closing.start()
    time.sleep(0.2)
    assert closing.is_alive()  # waits for the call in flight...
    gate.open.set()
    closing.join(10)
    assert not closing.is_alive() and gate.calls == 1  # ...and starts no other
    again: Memory = make_memory(path, user_id="ana")
    try:
        states = [again.get(i).state for i in ids]
        assert states[0] == EnrichState.enriched and states[1:] == [EnrichState.pending] * 3  # nothing lost
        report = again.enrich()
        assert report.enriched == 3 and all(again.get(i).state == EnrichState.enriched for i in ids)
    finally:
        again.close()


def test_an_unreachable_provider_leaves_notes_pending_with_the_reason(tmp_path: Path) -> None:
    from amem.errors import LLMUnavailable

    def down(messages: list[Message], schema: dict[str, Any] | None) -> Any:
        raise LLMUnavailable("connection refused")

    mem = make_memory(tmp_path / "m.db", llm=FakeLLM(handler=down), user_id="ana")
    try:
        note = mem.add("Ana: my passport expires in May", wait=False)
        assert mem.background.wait(10)
        assert mem.get(note.id).state == EnrichState.pending
        assert "connection refused" in (mem.background.status().last_error or "")
    finally:
        mem.close()


def test_bench_background_reports_add_latency_beside_a_memory_without_llm(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from amem.cli import cli

    data = Path(__file__).parent / "data" / "locomo_tiny.json"
    args = ["--home", str(tmp_path), "--llm", "fake", "--embedder", "fake", "bench", "background"]
    result = CliRunner().invoke(cli, [*args, "--data", str(data), "--turns", "5", "--pause", "0", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert list(rows) == ["no LLM (store and embed only)", "worker busy (fake)"]
    for row in rows.values():
        assert row["adds"] == 4 and 0 < row["p50_ms"] <= row["p95_ms"] <= row["max_ms"]
    assert rows["no LLM (store and embed only)"]["enriched_meanwhile"] is None


def test_scopes_run_side_by_side_while_each_keeps_its_order(tmp_path: Path) -> None:
    """llm_concurrency 4: LoCoMo conversations are ingested by the background workers at once, each
    conversation's turns enriched oldest first."""
    from amem.ingest import ingest_locomo

    data = Path(__file__).parent / "data" / "locomo_tiny.json"
    active: set[str] = set()
    overlap = threading.Event()
    lock = threading.Lock()

    def slow(messages: list[Message], schema: dict[str, Any] | None) -> Any:
        who = "a" if "Caroline" in messages[-1].content.split("NEW NOTE")[-1] else "b"
        with lock:
            active.add(who)
            if len(active) > 1:
                overlap.set()
        time.sleep(0.05)
        with lock:
            active.discard(who)
        return schema_answer(messages[-1].content, schema)

    mem = make_memory(tmp_path / "m.db", llm=FakeLLM(handler=slow), options={"llm_concurrency": 4})
    try:
        report = ingest_locomo(mem, data)
        assert report["states"] == {"enriched": report["added"]}
        assert overlap.is_set()  # the two conversations' calls were in flight together
        for conv in ("conv-a", "conv-b"):
            scoped = mem.scoped(user_id=conv)
            notes = sorted(scoped.list(limit=100), key=lambda n: (n.event_time, n.ingest_time))
            firsts = [
                c.note_ids[0]
                for c in sorted(mem.store.llm_calls(limit=1000), key=lambda c: c.created_at)
                if c.step == "construct" and c.note_ids[0] in {n.id for n in notes}
            ]
            assert firsts == [n.id for n in notes]
    finally:
        mem.close()


def test_bench_concurrency_enriches_every_note_at_each_level(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from amem.cli import cli

    args = ["--home", str(tmp_path), "--embedder", "fake", "bench", "concurrency", "--levels", "1,4"]
    result = CliRunner().invoke(cli, [*args, "--scopes", "4", "--notes", "2", "--latency", "0.02", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["concurrency"] for r in rows] == [1, 4]
    assert all(r["notes"] == r["enriched"] == 8 and r["finished"] for r in rows)
    assert rows[0]["vs_first"] == 1.0 and rows[1]["vs_first"] > 0
