"""`amem bench scale` on a tiny size: the report files exist and hold real measurements."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from amem.bench.scale import synthetic_notes
from amem.cli import cli


def test_synthetic_notes_are_deterministic() -> None:
    assert [n.content for n in synthetic_notes(20)] == [n.content for n in synthetic_notes(20)]
    assert len({n.content for n in synthetic_notes(200)}) > 190


def test_bench_scale_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "scale"
    result = CliRunner().invoke(
        cli,
        [
            "--home",
            str(tmp_path / "home"),
            "bench",
            "scale",
            "--notes",
            "300",
            "--queries",
            "20",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())
    assert rows[0]["notes"] == 300 and rows[0]["embedder"] == "fake:384"
    for preset in ("paper", "hybrid"):
        assert 0 < rows[0]["search"][preset]["p50_ms"] <= rows[0]["search"][preset]["p95_ms"]
    assert rows[0]["add_notes_per_s"] > 0 and rows[0]["db_bytes_per_note"] > 384 * 4
    assert rows[0]["add_one_notes_per_s"] > 0
    assert rows[0]["consolidate"]["first_s"] > 0 and rows[0]["consolidate"]["next_s"] > 0
    assert "| 300 |" in (out / "results.md").read_text()


def test_bench_scale_runs_postgresql_next_to_sqlite(tmp_path: Path, pg_server: str) -> None:
    out = tmp_path / "scale"
    args = ["--home", str(tmp_path / "h"), "bench", "scale", "--notes", "200", "--queries", "10"]
    result = CliRunner().invoke(cli, [*args, "--postgres", pg_server, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())
    assert [r["store"] for r in rows] == ["sqlite", "postgresql"]
    pg = rows[1]
    assert pg["notes"] == 200 and pg["db_bytes"] > 0
    for preset in ("paper", "hybrid", "keyword", "hybrid_all_terms"):
        assert 0 < pg["search"][preset]["p50_ms"] <= pg["search"][preset]["p95_ms"]
    assert "| postgresql |" in (out / "results.md").read_text()
