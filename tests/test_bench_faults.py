"""`amem bench faults` end to end on SQLite with small counts: the table, the results files, the exit code."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from amem.bench.faults import Row, markdown
from amem.cli import cli


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


def test_a_loss_makes_the_table_say_no() -> None:
    row = Row("writer SIGKILLed during ingest", "sqlite", "20 kills", "1 notes", 1.0, ok=False)
    assert markdown([row]).splitlines()[-1].endswith("| NO |")
