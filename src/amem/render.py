"""Human-readable output for the CLI and the demo (plain text, a little colour when on a terminal)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from .memory import EnrichReport, Memory
from .notes import Link, Note, NoteVersion, SearchHit, format_date


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (stdout stays clean for --json), fed with (done, total) reports."""
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        state = {"done": 0}

        def update(done: int, _total: int) -> None:
            bar.update(done - state["done"])
            state["done"] = done

        yield update


def _wrap(text: str, indent: str = "    ") -> str:
    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent)


def note_block(note: Note) -> str:
    head = (
        click.style(note.id, fg="cyan")
        + f"  [{format_date(note.event_time)}]  {note.state.value}  v{note.version}"
    )
    lines = [head, _wrap(note.content)]
    if note.keywords:
        lines.append("    keywords: " + ", ".join(note.keywords))
    if note.tags:
        lines.append("    tags:     " + ", ".join(note.tags))
    if note.context:
        lines.append(_wrap("context:  " + note.context))
    if note.metadata:
        lines.append("    metadata: " + ", ".join(f"{k}={v}" for k, v in note.metadata.items()))
    if note.last_error:
        lines.append(click.style("    last error: " + note.last_error, fg="yellow"))
    return "\n".join(lines)


def note(memory: Memory, n: Note) -> None:
    click.echo(note_block(n))
    found = memory.links(n.id)
    if found:
        links(memory, n.id, found)


def links(memory: Memory, note_id: str, found: Sequence[Link]) -> None:
    others = memory.store.get_notes(
        [lk.target_id if lk.source_id == note_id else lk.source_id for lk in found]
    )
    click.echo(f"    links ({len(found)}):")
    for lk in found:
        outgoing = lk.source_id == note_id
        other = lk.target_id if outgoing else lk.source_id
        arrow = "->" if outgoing else "<-"
        text = others[other].content if other in others else "(missing)"
        click.echo(f"      {arrow} {other[:8]} w={lk.weight:.2f} {textwrap.shorten(text, 60)}")
        if lk.reason:
            click.echo(f"         because: {textwrap.shorten(lk.reason, 80)}")


def note_table(notes: Sequence[Note]) -> None:
    if not notes:
        click.echo("no notes")
    for n in notes:
        click.echo(note_block(n))


def hits(found: Sequence[SearchHit]) -> None:
    if not found:
        click.echo("no results")
    for i, hit in enumerate(found, start=1):
        click.echo(
            f"{i:2d}. {click.style(f'{hit.score:.3f}', fg='green')}  {hit.note.id[:8]}  "
            f"[{format_date(hit.note.event_time)}] {textwrap.shorten(hit.note.content, 80)}"
        )
        click.echo(f"      why: {hit.why.describe()}")


def history(versions: Sequence[NoteVersion]) -> None:
    for v in versions:
        cause = f"{v.cause.value}" + (f" by LLM call {v.llm_call_id[:8]}" if v.llm_call_id else "")
        click.echo(click.style(f"v{v.version}", bold=True) + f"  {v.created_at:%Y-%m-%d %H:%M:%S}  {cause}")
        if v.detail:
            click.echo(f"    {v.detail}")
        click.echo(_wrap("context: " + (v.context or "(none)")))
        click.echo("    tags: " + (", ".join(v.tags) or "(none)"))


def kv(data: dict[str, Any], indent: int = 0) -> str:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(" " * indent + f"{key}:")
            lines.append(kv(value, indent + 2))
        else:
            shown = f"{value:.3f}" if isinstance(value, float) else value
            lines.append(" " * indent + f"{key}: {shown}")
    return "\n".join(lines)


def ingest_summary(report: dict[str, Any]) -> str:
    states = ", ".join(f"{v} {k}" for k, v in report["states"].items()) or "nothing new"
    return f"added {report['added']} notes ({states})"


def enrich_summary(report: EnrichReport) -> str:
    return f"enriched {report.enriched}, still pending {report.still_pending}, failed {report.failed}"


def models(rows: Sequence[Any]) -> None:
    for row in rows:
        data = row if isinstance(row, dict) else vars(row)
        present = "present" if data.get("present") else "not pulled"
        size = data.get("size") or 0
        click.echo(f"{data.get('name'):28s} {data.get('kind', ''):9s} {size / 1e6:8.0f} MB  {present}")
