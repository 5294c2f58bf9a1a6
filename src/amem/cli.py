"""`amem` command line: a thin layer over ``amem.Memory`` (no SQL, prompts or retrieval logic here)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from . import render
from .config import Settings
from .errors import AmemError, InvalidInput
from .memory import Memory
from .notes import EnrichState, Note, NoteStatus, utcnow
from .store import Filters


class Ctx:
    def __init__(self, overrides: dict[str, Any], scope: dict[str, str | None]) -> None:
        self.overrides = overrides
        self.scope = scope
        self._memory: Memory | None = None

    @property
    def settings(self) -> Settings:
        return Settings.resolve(self.overrides)

    def memory(self) -> Memory:
        if self._memory is None:
            s = self.scope
            self._memory = Memory(
                settings=self.settings, user_id=s["user_id"], agent_id=s["agent_id"], run_id=s["run_id"]
            )
        return self._memory


pass_ctx = click.make_pass_decorator(Ctx)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


#: the main options a command line may also give after the command (`amem add "..." --user alice`)
ANYWHERE = ("--user", "--agent", "--run", "--home", "--llm", "--embedder", "--store", "--pipeline")


class AmemGroup(click.Group):
    """Takes the main options (scope, store, models) after the command as well as before it: they are
    moved in front of the command unless that command has an option of the same name. ``--`` ends it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist(self, ctx, list(args)))


def hoist(group: click.Group, ctx: click.Context, args: list[str]) -> list[str]:
    takes_value = {o for p in group.params if isinstance(p, click.Option) and not p.is_flag for o in p.opts}
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        i += 2 if args[i] in takes_value else 1
    if i >= len(args) or args[i] == "--":
        return args
    own: set[str] = set()  # the options of the command chain (`bench scale` has its own)
    command: click.Command | None = group
    for token in args[i:]:
        if not isinstance(command, click.Group) or token.startswith("-"):
            break
        command = command.get_command(ctx, token)
        if command is None:
            break
        own |= {o for p in command.params for o in getattr(p, "opts", [])}
    front, rest = args[:i], []
    j = i
    while j < len(args):
        token = args[j]
        if token == "--":
            rest += args[j:]
            break
        name = token.split("=", 1)[0]
        if name in ANYWHERE and name not in own:
            if "=" in token or j + 1 >= len(args):
                front.append(token)
                j += 1
            else:
                front += [token, args[j + 1]]
                j += 2
            continue
        rest.append(token)
        j += 1
    return front + rest


@click.group(cls=AmemGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(path_type=Path), help="Data folder [env AMEM_HOME, default ~/.amem].")
@click.option("--llm", help="LLM as provider:model, e.g. local:qwen2.5-coder-1.5b, openai:gpt-4o-mini, none.")
@click.option("--embedder", help="Embedder as provider:model, e.g. local:all-minilm-l6-v2.")
@click.option("--store", "database_url", help="Store URL or SQLite path [env AMEM_DATABASE_URL].")
@click.option("--pipeline", type=click.Choice(["amem", "episode", "paper"]), help="Write pipeline.")
@click.option("--user", "user_id", help="Scope: user id.")
@click.option("--agent", "agent_id", help="Scope: agent id.")
@click.option("--run", "run_id", help="Scope: run/session id.")
@click.version_option(package_name="amem")
@click.pass_context
def cli(
    ctx: click.Context, user_id: str | None, agent_id: str | None, run_id: str | None, **opts: Any
) -> None:
    """amem: self-organising long-term memory for LLM agents (A-MEM)."""
    ctx.obj = Ctx(opts, {"user_id": user_id, "agent_id": agent_id, "run_id": run_id})

    @ctx.call_on_close
    def _close() -> None:
        if ctx.obj._memory is not None:
            ctx.obj._memory.close()


def _emit(as_json: bool, data: Any, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        human()


def _meta(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"metadata must look like key=value, not {pair!r}")
        try:  # numbers, booleans and JSON literals are typed; NaN/Infinity stay text
            parsed: Any = json.loads(value, parse_constant=str)
        except json.JSONDecodeError:
            parsed = value
        out[key] = parsed
    return out


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"time {value!r}: use ISO 8601, e.g. 2023-05-08 or 2023-05-08T13:56:00Z") from exc


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> timedelta | None:
    """'30d', '12h', '90m', '45s', '2w' -> a timedelta (a usage error for anything else)."""
    if value is None:
        return None
    found = _DURATION.match(value)
    if found is None or float(found.group(1)) <= 0:
        raise click.BadParameter(f"{value!r}: give a positive number and a unit, e.g. 30d, 12h, 90m, 45s, 2w")
    seconds = float(found.group(1)) * _UNIT_SECONDS[found.group(2).lower()]
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise click.BadParameter(f"{value!r} is too long; give at most a few thousand years") from None


@cli.command()
@click.argument("content")
@click.option("--time", "event_time", help="When it happened (ISO 8601); default now.")
@click.option("--meta", multiple=True, help="Metadata key=value (repeatable).")
@click.option("--pin", "pinned", is_flag=True, help="Pin it: consolidation never archives it.")
@click.option(
    "--ttl",
    callback=_duration,
    metavar="DURATION",
    help="Expire after this long (30d, 12h, 90m): the next consolidation after that archives it.",
)
@json_option
@pass_ctx
def add(
    c: Ctx,
    content: str,
    event_time: str | None,
    meta: tuple[str, ...],
    pinned: bool,
    ttl: timedelta | None,
    as_json: bool,
) -> None:
    """Remember CONTENT as a new note (enriched, linked, evolved).

    An exact duplicate of a note in this scope is not stored twice: the existing note is shown, with
    this write's metadata added to its sources.
    """
    started = utcnow()
    try:
        expires_at = started + ttl if ttl is not None else None
    except OverflowError:
        raise click.BadParameter("the expiry falls after the year 9999", param_hint="--ttl") from None
    note = c.memory().add(
        content, event_time=_time(event_time), metadata=_meta(meta), pinned=pinned, expires_at=expires_at
    )

    def human() -> None:
        if note.ingest_time < started:
            render.echo(f"already remembered as {note.id} (an exact duplicate: no new note was made)")
        render.note(c.memory(), note)

    _emit(as_json, note.model_dump(mode="json"), human)


@cli.command(name="add-many")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "locomo"]), default="auto")
@click.option(
    "--batch-size", type=int, default=None, help="Notes per LLM call (default 4; 1 = one call each)."
)
@click.option("--conversation", "conversations", multiple=True, help="LoCoMo: only these sample ids.")
@click.option("--max-turns", type=int, default=None, help="LoCoMo: at most this many turns per conversation.")
@json_option
@pass_ctx
def add_many(
    c: Ctx,
    path: Path,
    fmt: str,
    batch_size: int | None,
    conversations: tuple[str, ...],
    max_turns: int | None,
    as_json: bool,
) -> None:
    """Add every note in PATH: JSONL ({"content", "event_time"?, "metadata"?} per line) or LoCoMo JSON.

    LoCoMo conversations go to one scope each (user = sample id) and resume where a previous run stopped.
    """
    from .ingest import ingest_jsonl, ingest_locomo

    if fmt == "locomo" or (fmt == "auto" and path.suffix.lower() == ".json"):
        report = ingest_locomo(c.memory(), path, conversations, max_turns, batch_size, render.progress_bar)
    else:
        report = ingest_jsonl(c.memory(), path, batch_size, render.progress_bar)
    _emit(as_json, report, lambda: click.echo(render.ingest_summary(report)))


cli.add_command(add_many, name="ingest")


@cli.command()
@click.argument("query")
@click.option("-k", type=int, default=5, show_default=True, help="Notes to return before link expansion.")
@click.option("--preset", type=click.Choice(["hybrid", "paper"]), default=None)
@click.option("--no-links", is_flag=True, help="Do not add linked neighbours.")
@click.option("--budget", type=int, default=1200, show_default=True, help="Token budget for the results.")
@click.option("--after", help="Only notes that happened at or after this time.")
@click.option("--before", help="Only notes that happened before this time.")
@click.option("--meta", multiple=True, help="Metadata filter key=value (repeatable).")
@click.option("--include-archived", is_flag=True, help="Also return archived and merged notes.")
@json_option
@pass_ctx
def search(
    c: Ctx,
    query: str,
    k: int,
    preset: str | None,
    no_links: bool,
    budget: int,
    after: str | None,
    before: str | None,
    meta: tuple[str, ...],
    include_archived: bool,
    as_json: bool,
) -> None:
    """Find notes relevant to QUERY, with the reason each one was returned."""
    filters = Filters(metadata=_meta(meta), event_after=_time(after), event_before=_time(before))
    hits = c.memory().search(
        query,
        k,
        filters=filters,
        preset=preset,
        expand=not no_links,
        token_budget=budget,
        include_archived=include_archived,
    )
    _emit(as_json, [h.model_dump(mode="json") for h in hits], lambda: render.hits(hits))


@cli.command()
@click.argument("note_id")
@json_option
@pass_ctx
def get(c: Ctx, note_id: str, as_json: bool) -> None:
    """Show one note with its links."""
    m = c.memory()
    note = m.get(note_id)
    data = {**note.model_dump(mode="json"), "links": [lk.model_dump(mode="json") for lk in m.links(note_id)]}
    _emit(as_json, data, lambda: render.note(m, note))


@cli.command(name="list")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--offset", type=int, default=0)
@click.option("--state", type=click.Choice([s.value for s in EnrichState]), default=None)
@click.option("--status", type=click.Choice([s.value for s in NoteStatus]), default=None)
@json_option
@pass_ctx
def list_(c: Ctx, limit: int, offset: int, state: str | None, status: str | None, as_json: bool) -> None:
    """List notes, newest first (every status unless --status says which)."""
    filters = (
        Filters(
            states=[EnrichState(state)] if state else None,
            statuses=[NoteStatus(status)] if status else None,
        )
        if state or status
        else None
    )
    notes = c.memory().list(limit=limit, offset=offset, filters=filters)
    _emit(as_json, [n.model_dump(mode="json") for n in notes], lambda: render.note_table(notes))


@cli.command()
@click.argument("note_id")
@json_option
@pass_ctx
def links(c: Ctx, note_id: str, as_json: bool) -> None:
    """Show the links of a note, both directions."""
    found = c.memory().links(note_id)
    _emit(
        as_json,
        [lk.model_dump(mode="json") for lk in found],
        lambda: render.links(c.memory(), note_id, found),
    )


@cli.command()
@click.argument("note_id")
@json_option
@pass_ctx
def history(c: Ctx, note_id: str, as_json: bool) -> None:
    """Show every version of a note and what caused it."""
    versions = c.memory().history(note_id)
    calls = c.memory().llm_calls(note_id)
    _emit(as_json, [v.model_dump(mode="json") for v in versions], lambda: render.history(versions, calls))


@cli.command()
@click.argument("note_id")
@click.option("--content")
@click.option("--keywords", help="Comma-separated.")
@click.option("--tags", help="Comma-separated.")
@click.option("--context")
@click.option("--time", "event_time")
@click.option("--meta", multiple=True, help="Replace metadata with these key=value pairs.")
@json_option
@pass_ctx
def update(
    c: Ctx,
    note_id: str,
    content: str | None,
    keywords: str | None,
    tags: str | None,
    context: str | None,
    event_time: str | None,
    meta: tuple[str, ...],
    as_json: bool,
) -> None:
    """Edit a note; the previous version stays in its history."""
    note = c.memory().update(
        note_id,
        content=content,
        keywords=keywords.split(",") if keywords is not None else None,
        tags=tags.split(",") if tags is not None else None,
        context=context,
        metadata=_meta(meta) if meta else None,
        event_time=_time(event_time),
    )
    _emit(as_json, note.model_dump(mode="json"), lambda: render.note(c.memory(), note))


@cli.command()
@click.argument("note_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (--json never asks).")
@json_option
@pass_ctx
def delete(c: Ctx, note_id: str, yes: bool, as_json: bool) -> None:
    """Delete a note, its links and its history, for good."""
    m = c.memory()
    m.get(note_id)
    if not yes and not as_json:
        click.confirm(f"Delete note {note_id} for good?", abort=True)
    m.delete(note_id)
    _emit(as_json, {"deleted": note_id}, lambda: click.echo(f"deleted {note_id}"))


def _changed(as_json: bool, note: Note, message: str) -> None:
    _emit(as_json, note.model_dump(mode="json"), lambda: click.echo(f"{message} {note.id} (v{note.version})"))


@cli.command()
@click.argument("note_id")
@click.option("--off", is_flag=True, help="Unpin instead.")
@json_option
@pass_ctx
def pin(c: Ctx, note_id: str, off: bool, as_json: bool) -> None:
    """Pin a note (consolidation never archives a pinned note), or unpin it with --off."""
    _changed(as_json, c.memory().pin(note_id, not off), "unpinned" if off else "pinned")


@cli.command()
@click.argument("note_id")
@json_option
@pass_ctx
def archive(c: Ctx, note_id: str, as_json: bool) -> None:
    """Take a note out of search; it stays readable, and `amem unarchive` brings it back."""
    _changed(as_json, c.memory().archive(note_id), "archived")


@cli.command()
@click.argument("note_id")
@json_option
@pass_ctx
def unarchive(c: Ctx, note_id: str, as_json: bool) -> None:
    """Put an archived note back into search."""
    _changed(as_json, c.memory().unarchive(note_id), "unarchived")


@cli.command()
@click.argument("note_id")
@click.argument("version", type=click.IntRange(min=1))
@json_option
@pass_ctx
def restore(c: Ctx, note_id: str, version: int, as_json: bool) -> None:
    """Put a note back as it was at VERSION (`amem history ID` lists them), as a new version."""
    note = c.memory().restore(note_id, version)
    _emit(as_json, note.model_dump(mode="json"), lambda: render.note(c.memory(), note))


@cli.command()
@click.argument("source_id")
@click.argument("target_id")
@click.option("--reason", default="", help="Why they are linked.")
@click.option("--weight", type=float, default=1.0, show_default=True)
@json_option
@pass_ctx
def link(c: Ctx, source_id: str, target_id: str, reason: str, weight: float, as_json: bool) -> None:
    """Link SOURCE_ID to TARGET_ID by hand (same scope); a version of the source records it."""
    made = c.memory().link(source_id, target_id, reason, weight)
    _emit(
        as_json,
        made.model_dump(mode="json"),
        lambda: click.echo(f"linked {source_id[:8]} -> {target_id[:8]} w={made.weight:.2f}"),
    )


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only report what would change; write nothing.")
@click.option("--as-of", "as_of", metavar="ISO-DATE", help="Judge decay and expiry as of this time.")
@click.option("--no-llm", is_flag=True, help="No LLM: near duplicates are counted, not merged.")
@click.option("--full", is_flag=True, help="Re-check every near-duplicate pair, not only new ones.")
@click.option("--undo", "undo_run", metavar="RUN_ID", help="Undo the consolidation run RUN_ID instead.")
@click.option("--force", is_flag=True, help="With --undo: restore notes changed after the run too.")
@json_option
@pass_ctx
def consolidate(
    c: Ctx,
    dry_run: bool,
    as_of: str | None,
    no_llm: bool,
    full: bool,
    undo_run: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Merge duplicates, mark superseded facts, prune decayed links and archive forgotten or expired notes.

    Every change is a version tagged with the run id; `amem consolidate --undo RUN_ID` puts back what a
    run changed.
    """
    m = c.memory()
    if undo_run is not None:
        if dry_run or as_of or no_llm or full:
            raise click.UsageError("--undo takes only --force (and --json)")
        undone = m.undo_consolidation(undo_run, force=force)
        _emit(as_json, undone.model_dump(mode="json"), lambda: click.echo(render.undo_summary(undone)))
        return
    if force:
        raise click.UsageError("--force goes with --undo RUN_ID")
    report = m.consolidate(dry_run=dry_run, as_of=_time(as_of), use_llm=not no_llm, full=full)
    _emit(as_json, report.model_dump(mode="json"), lambda: render.consolidation(report))


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many notes.")
@click.option("--include-failed", is_flag=True, help="Retry notes that already failed 3 times.")
@json_option
@pass_ctx
def enrich(c: Ctx, limit: int | None, include_failed: bool, as_json: bool) -> None:
    """Finish notes stored as pending because the LLM was unavailable."""
    m = c.memory()
    states = [EnrichState.pending] + ([EnrichState.failed] if include_failed else [])
    total = min(m.count(Filters(states=states)), limit or 10**9)
    with render.progress_bar("enriching", total) as bar:
        report = m.enrich(limit=limit, include_failed=include_failed, progress=bar)
    _emit(as_json, report.model_dump(exclude_none=True), lambda: click.echo(render.enrich_summary(report)))
    if report.stopped:  # the provider was unreachable: the rest waits for the next run
        render.echo(f"stopped early: {report.stopped}", err=True)


@cli.command()
@json_option
@pass_ctx
def stats(c: Ctx, as_json: bool) -> None:
    """Counts, database size, and LLM cost per note."""
    from .costs import summarise

    data = {**c.memory().stats(), "llm": summarise(c.memory().llm_calls())}
    _emit(as_json, data, lambda: click.echo(render.kv(data)))


@cli.command()
@click.option("--fresh/--keep", default=True, help="Start from an empty demo memory (default).")
@pass_ctx
def demo(c: Ctx, fresh: bool) -> None:
    """Build a memory from a bundled sample conversation with the embedded models, and explore it."""
    from .demo import run_demo

    run_demo(c.settings, fresh=fresh, progress=render.progress_bar)


def _register_commands() -> None:
    from .bench.cli import bench
    from .cli_audit import audit
    from .cli_data import export_, import_, migrate, models
    from .server.cli import mcp, serve

    for command in (export_, import_, migrate, models, bench, serve, mcp, audit):
        cli.add_command(command)


_register_commands()


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except AmemError as exc:
        render.echo(f"error: {exc}", err=True)  # provider error bodies are quoted in some messages
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted; everything already added is stored", err=True)
        sys.exit(130)
