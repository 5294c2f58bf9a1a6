"""`amem audit`: the faithfulness report of the memory's scope, for people or (--json) for scripts."""

from __future__ import annotations

import json

import click

from . import render
from .audit import AuditReport, Example, FieldAudit
from .cli import Ctx, json_option, pass_ctx


@click.command()
@click.option(
    "--examples", default=5, show_default=True, type=click.IntRange(0, 100), help="Examples per finding."
)
@json_option
@pass_ctx
def audit(c: Ctx, examples: int, as_json: bool) -> None:
    """How faithful the LLM-written fields are: grounded contexts and updates, example leaks, loops,
    link reasons, tag concentration, and what the checks refused."""
    report = c.memory().audit(examples)
    if as_json:
        click.echo(json.dumps(report.model_dump(), indent=2, default=str))
    else:
        click.echo(human(report))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _examples(items: list[Example]) -> list[str]:
    return [
        f"    {render.shown(e.note_id[:8])}  {render.shown(e.text)}  [{render.shown(e.detail)}]"
        for e in items
    ]


def _field(name: str, f: FieldAudit) -> list[str]:
    line = f"{name}: {f.checked} checked, {f.grounded} grounded ({_pct(f.share_grounded)})"
    return [line, *_examples(f.examples)]


def human(r: AuditReport) -> str:
    lines = [f"notes: {r.notes} ({r.enriched} enriched)"]
    lines += _field("contexts", r.contexts)
    lines += _field("updates", r.updates)
    lk = r.links
    shared = f"{lk.naming_shared} ({_pct(lk.share_naming_shared)})"
    distinct = f"{lk.distinct_reasons} ({_pct(lk.distinct_per_link)} per link)"
    lines.append(f"links: {lk.links}, reasons naming what both share {shared}, distinct reasons {distinct}")
    lines += [f"    {n} x {render.shown(reason)}" for reason, n in lk.top_reasons]
    lines.append(f"example leaks: {r.leaks.count}")
    lines += _examples(r.leaks.examples)
    lines.append(f"loops: {r.loops.count}")
    lines += _examples(r.loops.examples)
    t = r.tags
    lines.append(f"tags: {t.distinct_tags} distinct on {t.notes} notes, most common on {_pct(t.max_share)}")
    lines += [f"    {render.shown(tag)}: {n} notes ({_pct(share)})" for tag, n, share in t.top]
    if t.over_limit:
        lines.append("    over the limit: " + ", ".join(render.shown(x) for x in t.over_limit))
    rf = r.refusals
    lines.append(f"refused by the checks: {rf.calls_with_refusals} calls")
    for field, actions in sorted(rf.by_field.items()):
        lines.append(f"    {field}: " + ", ".join(f"{a} {n}" for a, n in sorted(actions.items())))
    lines += _examples(rf.examples)
    return "\n".join(lines)
