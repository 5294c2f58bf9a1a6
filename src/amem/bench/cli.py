"""`amem bench ...` commands (registered on the main CLI)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from ..config import Settings
from ..render import progress_bar


@click.group(name="bench")
def bench() -> None:
    """Benchmarks with measured numbers (see BENCHMARKS.md for published runs)."""


@bench.command(name="scale")
@click.option(
    "--notes", "sizes", type=click.IntRange(min=10), multiple=True, help="Note counts (repeatable)."
)
@click.option(
    "--embedder",
    "bench_embedder",
    default="fake:384",
    show_default=True,
    help="Embedder for the synthetic notes (e.g. local:all-minilm-l6-v2).",
)
@click.option("--queries", type=click.IntRange(min=10), default=200, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the stores and results [default <home>/bench/scale].",
)
@click.pass_obj
def scale(obj: Any, sizes: tuple[int, ...], bench_embedder: str, queries: int, out: Path | None) -> None:
    """Add throughput, search p50/p95 per preset, DB size and RAM per note at each size (no LLM)."""
    from .scale import markdown, run_size

    settings: Settings = replace(obj.settings, embedder=bench_embedder)
    folder = out or settings.home / "bench" / "scale"
    rows = []
    for n in sizes or (10_000,):
        with progress_bar(f"{n:,} notes", n) as progress:
            rows.append(run_size(settings, folder / f"n{n}", n, queries=queries, progress=progress))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows)
    (folder / "results.md").write_text(table + "\n")
    click.echo(table)
    click.echo(f"\nresults in {folder}", err=True)
