"""Human-readable output for the CLI and the demo (plain text, a little colour when on a terminal)."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click

from .consolidate import ConsolidationReport, UndoReport
from .memory import EnrichReport, Memory
from .notes import Link, LLMCall, Note, NoteStatus, NoteVersion, SearchHit, format_date


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (stdout stays clean for --json), fed with (done, total) reports."""
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        state = {"done": 0}

        def update(done: int, _total: int) -> None:
            bar.update(done - state["done"])
            state["done"] = done

        yield update


#: What a terminal acts on rather than shows: C0/C1 controls (an ANSI escape sequence in a note could
#: recolour, hide or retitle the screen) and the bidirectional controls that reorder what is read.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(value: object) -> str:
    """Stored text as a terminal may show it: every control character as a visible escape (ESC prints as
    ``\\u001b``). All stored text (which anyone with write access may have written) goes through here."""
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", str(value))


def echo(text: str, err: bool = False) -> None:
    """A line made of text that may quote stored or remote text (not for lines with styles)."""
    click.echo(shown(text), err=err)


def _wrap(text: str, indent: str = "    ") -> str:
    return textwrap.fill(shown(text), width=100, initial_indent=indent, subsequent_indent=indent)


def _when(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"


def _flags(status: NoteStatus, pinned: bool, merged_into: str | None) -> str:
    """' archived', ' merged into 1a2b3c4d', ' pinned': empty for an ordinary active note."""
    out = ""
    if status == NoteStatus.merged:
        out += " " + click.style(
            "merged" + (f" into {shown(merged_into[:8])}" if merged_into else ""), fg="yellow"
        )
    elif status != NoteStatus.active:
        out += " " + click.style(status.value, fg="yellow")
    if pinned:
        out += " " + click.style("pinned", fg="magenta")
    return out


def _lifecycle_line(
    superseded_by: str | None, expires_at: datetime | None, sources: int, indent: str = "    "
) -> str | None:
    """One compact line for what upkeep put on a note: superseded, expiry, folded-in sources."""
    parts = []
    if superseded_by:
        parts.append(f"superseded by {shown(superseded_by[:8])}")
    if expires_at is not None:
        parts.append(f"expires {_when(expires_at)}")
    if sources:
        parts.append(f"{sources} source{'s' if sources != 1 else ''} folded in")
    return indent + "; ".join(parts) if parts else None


def source_lines(note: Note) -> list[str]:
    """Where else the note's fact came from: exact duplicates written later and notes merged into it."""
    lines = [f"    sources ({len(note.sources)}):"]
    for src in note.sources:
        origin = f"merged {shown(str(src['note_id'])[:8])}" if src.get("note_id") else "duplicate"
        when = str(src.get("event_time") or "")[:10]
        meta = shown(", ".join(f"{k}={v}" for k, v in (src.get("metadata") or {}).items()))
        line = f"      {origin} [{when}]" + (f" {meta}" if meta else "")
        if src.get("content"):
            line += f" {textwrap.shorten(shown(src['content']), 60)}"
        lines.append(line)
    return lines


def note_block(note: Note, with_sources: bool = False) -> str:
    """The note; ``with_sources`` lists its sources (provenance), else only their number is shown."""
    head = (
        click.style(shown(note.id), fg="cyan")
        + f"  [{format_date(note.event_time)}]  {note.state.value}  v{note.version}"
        + _flags(note.status, note.pinned, note.merged_into)
    )
    lines = [head, _wrap(note.content)]
    count = 0 if with_sources else len(note.sources)
    if extra := _lifecycle_line(note.superseded_by, note.expires_at, count):
        lines.append(extra)
    if note.keywords:
        lines.append("    keywords: " + shown(", ".join(note.keywords)))
    if note.tags:
        lines.append("    tags:     " + shown(", ".join(note.tags)))
    if note.context:
        lines.append(_wrap("context:  " + note.context))
    if note.metadata:
        lines.append("    metadata: " + shown(", ".join(f"{k}={v}" for k, v in note.metadata.items())))
    if note.last_error:
        lines.append(click.style("    last error: " + shown(note.last_error), fg="yellow"))
    if with_sources and note.sources:
        lines.extend(source_lines(note))
    return "\n".join(lines)


def note(memory: Memory, n: Note) -> None:
    click.echo(note_block(n, with_sources=True))
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
        click.echo(f"      {arrow} {shown(other[:8])} w={lk.weight:.2f} {textwrap.shorten(shown(text), 60)}")
        if lk.reason:
            click.echo(f"         because: {textwrap.shorten(shown(lk.reason), 80)}")


def note_table(notes: Sequence[Note]) -> None:
    if not notes:
        click.echo("no notes")
    for n in notes:
        click.echo(note_block(n))


def hits(found: Sequence[SearchHit]) -> None:
    if not found:
        click.echo("no results")
    for i, hit in enumerate(found, start=1):
        n = hit.note
        flags = _flags(n.status, False, n.merged_into)
        superseded = f" (superseded by {shown(n.superseded_by[:8])})" if n.superseded_by else ""
        click.echo(
            f"{i:2d}. {click.style(f'{hit.score:.3f}', fg='green')}  {shown(n.id[:8])}{flags}  "
            f"[{format_date(n.event_time)}] {textwrap.shorten(shown(n.content), 80)}{superseded}"
        )
        click.echo(f"      why: {shown(hit.why.describe())}")


def history(versions: Sequence[NoteVersion], calls: Sequence[LLMCall] = ()) -> None:
    """Every version; with the note's ``calls``, what the grounding checks kept out of their answers
    about this note (refused updates included: they made no version)."""
    for v in versions:
        cause = f"{v.cause.value}" + (f" by LLM call {shown(v.llm_call_id[:8])}" if v.llm_call_id else "")
        if v.batch:
            cause += f" in run {shown(v.batch)}"
        click.echo(
            click.style(f"v{v.version}", bold=True)
            + f"  {v.created_at:%Y-%m-%d %H:%M:%S}  {cause}"
            + _flags(v.status, v.pinned, v.merged_into)
        )
        if v.detail:
            click.echo(_wrap(v.detail))
        if extra := _lifecycle_line(v.superseded_by, v.expires_at, len(v.sources)):
            click.echo(extra)
        click.echo(_wrap("context: " + (v.context or "(none)")))
        click.echo("    tags: " + (shown(", ".join(v.tags)) or "(none)"))
    note_id = versions[0].note_id if versions else None
    refused = [(c, r) for c in calls for r in c.refused if r.note_id == note_id]
    if refused:
        click.echo(click.style("kept out by the grounding checks", bold=True))
    for call, r in refused:
        click.echo(_wrap(f"{r.field} {r.action} (LLM call {call.id[:8]}, {call.step}): {r.text}"))
        click.echo(_wrap(f"why: {r.reason}", "        "))


def kv(data: dict[str, Any], indent: int = 0) -> str:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(" " * indent + f"{shown(key)}:")
            lines.append(kv(value, indent + 2))
        else:
            text = f"{value:.3f}" if isinstance(value, float) else shown(value)
            lines.append(" " * indent + f"{shown(key)}: {text}")
    return "\n".join(lines)


def ingest_summary(report: dict[str, Any]) -> str:
    states = ", ".join(f"{v} {k}" for k, v in report["states"].items()) or "nothing new"
    return f"added {report['added']} notes ({states})"


def consolidation(report: ConsolidationReport) -> None:
    kinds = ("merge", "supersede", "prune", "archive")
    counts = ", ".join(f"{report.count(k)} {k}" for k in kinds)
    label = " (dry run: nothing was changed)" if report.dry_run else ""
    click.echo(f"consolidation {report.run_id}{label} as of {_when(report.as_of)}")
    click.echo(f"  changes: {counts}")
    if report.unconfirmed or report.judged:
        click.echo(
            f"  near-duplicate pairs: {report.judged} judged by the LLM"
            f" ({report.updates_left} called an update: left to evolution), {report.unconfirmed} unconfirmed"
            + (" (left as they are)" if report.unconfirmed else "")
        )
    click.echo(
        f"  notes {report.notes_before} -> {report.notes_after}, links {report.links_before} -> "
        f"{report.links_after}, {report.seconds:.2f} s"
    )
    for change in report.changes:
        ids = shown(change.note_id[:8] + (f" -> {change.other_id[:8]}" if change.other_id else ""))
        click.echo(f"  {change.kind:9s} {ids:20s} {textwrap.shorten(shown(change.detail), 70)}".rstrip())
    if not report.dry_run and report.changes:
        click.echo(f"undo with: amem consolidate --undo {report.run_id}")


def undo_summary(report: UndoReport) -> str:
    text = f"undid {report.run_id}: restored {len(report.restored)} notes"
    if report.skipped:
        text += (
            f", skipped {len(report.skipped)} changed after the run "
            f"({shown(', '.join(s[:8] for s in report.skipped[:5]))}"
            f"{', ...' if len(report.skipped) > 5 else ''}; "
            "--force restores them anyway)"
        )
    return text


def enrich_summary(report: EnrichReport) -> str:
    return f"enriched {report.enriched}, still pending {report.still_pending}, failed {report.failed}"


def models(rows: Sequence[Any]) -> None:
    for row in rows:
        data = row if isinstance(row, dict) else vars(row)
        present = "present" if data.get("present") else "not pulled"
        size = data.get("size") or 0
        click.echo(f"{data.get('name'):28s} {data.get('kind', ''):9s} {size / 1e6:8.0f} MB  {present}")
