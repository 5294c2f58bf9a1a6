"""`amem bench serve`: a real server process, concurrent searches idle and during a batch job."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from amem.cli import cli

DATA = Path(__file__).resolve().parent / "data" / "locomo_tiny.json"


def test_bench_serve_measures_both_phases_against_a_real_server(tmp_path: Path) -> None:
    args = ["--home", str(tmp_path), "--llm", "fake", "--embedder", "fake", "bench", "serve"]
    args += ["--data", str(DATA), "--preload", "3", "--batch", "3"]
    args += ["--clients", "8", "--rounds", "2", "--json"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    idle, busy = rows["idle server"], rows["batch job enriching (fake)"]
    assert idle["searches"] == 16 and idle["errors"] == 0 and idle["p95_ms"] > 0
    assert busy["searches"] >= 8 and busy["errors"] == 0
    assert busy["job_done_of"].endswith("/3")
