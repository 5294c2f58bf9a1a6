"""Crash safety on both stores: a writer SIGKILLed 20+ times during a long ingest loses nothing that
returned, leaves nothing half-written, and a rerun completes the input with one note per content."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from amem.bench.crash import CrashReport, _compare, _journaled, make_input, run_crash, write
from amem.bench.integrity import check_store


def assert_survived(report: CrashReport, min_returned: int) -> None:
    summary = json.dumps(report.as_dict(), indent=1)
    assert report.kills >= 20, summary
    assert report.kills_in_transaction >= 5, summary  # kills did land inside open transactions
    assert report.writer_failures == [], summary  # every restart after a kill opened the store cleanly
    assert report.notes_returned >= min_returned, summary
    assert report.after_kills["ok"], summary  # integrity and invariants right after the last kill
    assert (report.missing_notes, report.missing_links, report.missing_versions) == (0, 0, 0), summary
    assert report.split_notes == 0, summary  # a resumed write never made a second note for its content
    assert report.rerun_failed == "", summary
    assert report.final["ok"], summary
    assert report.final["notes"] == report.notes_expected, summary
    assert (report.duplicates_after_rerun, report.absent_after_rerun, report.not_as_journaled) == (0, 0, 0)
    # the workload really wrote multi-row transactions: links and evolved neighbours
    # (the fake LLM's updates pass the grounding checks only when they add something of the new note)
    assert report.links > report.notes_expected // 2 and report.evolved_versions > 25, summary
    assert report.ok, summary
    print(f"\n{report.store}: {summary}")


def test_sqlite_writer_killed_20_times(tmp_path: Path) -> None:
    report = run_crash(f"sqlite:///{tmp_path / 'crash.db'}", tmp_path / "work", kills=20, notes=1000, seed=1)
    assert_survived(report, min_returned=100)


def test_postgres_writer_killed_20_times(pg_url: str, tmp_path: Path) -> None:
    report = run_crash(pg_url, tmp_path / "work", kills=20, notes=300, seed=2)
    assert_survived(report, min_returned=20)


def test_the_checks_catch_lost_links_versions_and_torn_links(tmp_path: Path) -> None:
    """The harness can fail: damage a store the way a non-atomic write would, and every check notices."""
    url, work = f"sqlite:///{tmp_path / 'bad.db'}", tmp_path / "work"
    work.mkdir()
    (work / "flags.bin").write_bytes(bytes(8))
    write(url, work, notes=40, seed=3, final=True)
    expected = _journaled(work / "journal.jsonl")
    assert check_store(url).ok
    linked = next(ids for ids, links, _ in expected.values() if links)
    note_id = next(iter(linked))
    db = sqlite3.connect(tmp_path / "bad.db", isolation_level=None)
    db.execute("DELETE FROM links WHERE source_id = ?", (note_id,))  # links lost
    db.execute("DELETE FROM versions WHERE note_id = ? AND version = 1", (note_id,))  # a version lost
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute(
        "INSERT INTO links SELECT source_id, 'gone', weight, reason, created_at, updated_at, "
        "llm_call_id FROM links LIMIT 1"
    )  # a link to a note that does not exist
    db.close()
    found = check_store(url)
    assert not found.ok
    assert found.counts["torn_links"] == 1 and found.counts["foreign_key_violations"] == 1
    assert found.counts["version_gaps"] == 1
    report = CrashReport(store="sqlite", notes_expected=len(make_input(40, 3)))
    _compare(report, url, expected)
    assert report.missing_links >= 1 and report.missing_versions == 1 and report.missing_notes == 0
