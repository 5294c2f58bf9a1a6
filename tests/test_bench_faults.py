"""`amem bench faults` end to end on SQLite with small counts: the table, the results files, the exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import amem.bench.faults
from amem.bench.crash import CrashReport
from amem.bench.load import LoadReport
from amem.bench.provider_faults import ProviderFaultReport
from amem.cli import cli
from amem.store import store_kind


def test_bench_faults_reports_every_scenario_with_nothing_lost(tmp_path: Path) -> None:
    out = tmp_path / "faults"
    args = ["bench", "faults", "--kills", "3", "--crash-notes", "400", "--threads", "2", "--processes", "1"]
    args += ["--load-ops", "4", "--provider-notes", "6", "--rate", "0.5", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = json.loads((out / "results.json").read_text())
    faults = [r["fault"] for r in rows]
    assert faults[0] == "writer SIGKILLed during ingest" and "2 threads + 1 processes" in faults[1]
    kinds = ["timeout", "http_429", "http_500", "cut", "cut_body", "drip", "invalid_json", "bad_schema"]
    assert [f.removeprefix("LLM provider: ") for f in faults[2:]] == [*kinds, "all mixed"]
    assert all(r["ok"] and r["store"] == "sqlite" for r in rows)
    assert rows[0]["detail"]["kills"] == 3 and rows[0]["detail"]["missing_notes"] == 0
    assert all(r["detail"]["stored"] == 6 for r in rows[2:-1]) and rows[-1]["detail"]["stored"] == 18
    table = (out / "results.md").read_text()
    assert table.count("\n| ") == len(rows) and "| NO |" not in table


def test_too_few_kills_is_not_a_pass(tmp_path: Path) -> None:
    from amem.bench.faults import Plan, crash_row

    row = crash_row(
        "sqlite", f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "w", Plan(kills=50, crash_notes=10)
    )
    assert row.detail["kills"] < 50 and not row.ok and "raise --crash-notes" in row.lost


def test_a_loss_makes_the_table_say_no_and_the_command_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One crash run that lost a note: `amem bench faults` exits 1 and its table says NO on that row only
    (the harnesses are replaced by fakes that report at once)."""

    def crash(url: str, work: Path, kills: int, notes: int, seed: int) -> CrashReport:
        sound = {"ok": True}
        return CrashReport(store_kind(url), kills=kills, missing_notes=1, after_kills=sound, final=sound)

    def load(url: str, work: Path, threads: int, processes: int, ops: int, seed: int) -> LoadReport:
        return LoadReport(store_kind(url), threads, processes, ops, consistency={"ok": True})

    def provider(url: str, notes: int, rates: dict[str, float], seed: int, **_: Any) -> ProviderFaultReport:
        return ProviderFaultReport(store_kind(url), notes, seed, rates, max_retries=2, stored=notes)

    monkeypatch.setattr(amem.bench.faults, "run_crash", crash)
    monkeypatch.setattr(amem.bench.faults, "run_load", load)
    monkeypatch.setattr(amem.bench.faults, "run_provider_faults", provider)
    out = tmp_path / "faults"
    result = CliRunner().invoke(cli, ["bench", "faults", "--kills", "3", "--out", str(out)])
    assert result.exit_code == 1, result.output + repr(result.exception)
    rows = (out / "results.md").read_text().splitlines()[2:]
    assert len(rows) == 11 and rows[0].startswith("| writer SIGKILLed during ingest | sqlite |")
    assert rows[0].endswith("| NO |") and "| 1 notes, 0 links, 0 versions;" in rows[0]
    assert all(r.endswith("| yes |") for r in rows[1:])
    assert result.stdout.splitlines()[2] == rows[0]  # the table printed is the one written
    saved = json.loads((out / "results.json").read_text())
    assert [r["ok"] for r in saved] == [False] + [True] * 10 and saved[0]["detail"]["missing_notes"] == 1


def test_out_must_be_empty_or_an_earlier_run(tmp_path: Path) -> None:
    """The results folder is wiped before a run: only ever one this command made."""
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "precious.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["bench", "faults", "--out", str(keep)])
    assert result.exit_code != 0 and "not an earlier `amem bench faults` folder" in str(result.exception)
    assert (keep / "precious.txt").read_text() == "mine"
