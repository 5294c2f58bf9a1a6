"""`amem bench faults`: every injected fault of RELIABILITY.md in one run, per store, as a table.

Runs the crash harness (``crash.py``), the load harness (``load.py``) and the faulty-provider harness
(``provider_faults.py``) on SQLite and, given a server, on PostgreSQL (a fresh database per scenario).
Each row says how many faults were injected and what was lost; the goal is always zero.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from .crash import run_crash
from .flaky import FAULTS as FAULT_KINDS
from .load import run_load
from .provider_faults import run_provider_faults

Say = Callable[[str], None]
MARKER = ".amem-bench-faults"


@dataclass
class Row:
    fault: str
    store: str
    injected: str
    lost: str
    seconds: float
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    kills: int = 20
    crash_notes: int = 1000
    threads: int = 8
    processes: int = 4
    load_ops: int = 40
    provider_notes: int = 60
    rate: float = 0.5
    seed: int = 0


def run_all(plan: Plan, folder: Path, postgres: str | None, say: Say) -> list[Row]:
    """Every scenario on SQLite (under ``folder``) and, with ``postgres``, on that server."""
    from ..store.postgres_schema import fresh_database

    stores: list[tuple[str, Callable[[str], str]]] = [
        ("sqlite", lambda name: f"sqlite:///{folder / name}.db"),
    ]
    if postgres:
        stores.append(("postgresql", lambda name: fresh_database(postgres, f"amem_faults_{name}")))
    marker = folder / MARKER
    if folder.exists() and any(folder.iterdir()):
        if not marker.exists():
            raise InvalidInput(
                f"{folder} is not empty and not an earlier `amem bench faults` folder; use --out"
            )
        shutil.rmtree(folder)  # only ever a folder this command made
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by amem bench faults; deleted and remade by the next run\n")
    rows: list[Row] = []
    for store, url_for in stores:
        say(f"{store}: SIGKILL x{plan.kills}")
        rows.append(crash_row(store, url_for("crash"), folder / f"{store}-crash", plan))
        say(f"{store}: {plan.threads} threads + {plan.processes} processes")
        rows.append(load_row(store, url_for("load"), folder / f"{store}-load", plan))
        for kind in FAULT_KINDS:
            say(f"{store}: provider {kind} at {plan.rate:.0%}")
            rows.append(provider_row(store, url_for(f"llm_{kind}"), {kind: plan.rate}, kind, plan))
        say(f"{store}: every provider fault mixed")
        mixed = {kind: plan.rate / len(FAULT_KINDS) for kind in FAULT_KINDS}  # the same rate in all
        rows.append(provider_row(store, url_for("llm_mixed"), mixed, "all mixed", plan, scale=3))
    (folder / "results.json").write_text(json.dumps([r.__dict__ for r in rows], indent=1, default=str))
    return rows


def crash_row(store: str, url: str, work: Path, plan: Plan) -> Row:
    r = run_crash(url, work, kills=plan.kills, notes=plan.crash_notes, seed=plan.seed)
    return Row(
        "writer SIGKILLed during ingest",
        store,
        f"{r.kills} kills ({r.kills_in_transaction} inside a transaction), "
        f"{r.notes_returned} notes returned before the last",
        f"{r.missing_notes} notes, {r.missing_links} links, {r.missing_versions} versions; "
        f"{r.duplicates_after_rerun} duplicates after the rerun"
        + ("" if r.final.get("ok") and r.after_kills.get("ok") else "; integrity check FAILED")
        + ("" if r.kills >= plan.kills else "; the input ran out before every kill: raise --crash-notes"),
        r.seconds,
        r.ok and r.kills >= plan.kills,
        r.as_dict(),
    )


def load_row(store: str, url: str, work: Path, plan: Plan) -> Row:
    r = run_load(url, work, threads=plan.threads, processes=plan.processes, ops=plan.load_ops, seed=plan.seed)
    errors = sum(r.errors.values())
    load, base = r.load, r.baseline
    rate = (
        f"; {load.notes_per_s:.0f} notes/s and {load.searches_per_s:.0f} searches/s under load "
        f"({r.ratios.get('notes_per_s', 0):.2f}x and {r.ratios.get('searches_per_s', 0):.2f}x one thread)"
        if load and base
        else ""
    )
    return Row(
        f"{plan.threads} threads + {plan.processes} processes writing and searching",
        store,
        f"{r.writes_returned} writes{rate}",
        f"{r.lost_writes} writes, {r.lost_updates} updates, {r.lost_links} links; "
        f"{errors} errors surfaced" + ("" if r.consistency.get("ok") else "; consistency check FAILED"),
        r.seconds,
        r.ok,
        r.as_dict(),
    )


def provider_row(store: str, url: str, rates: dict[str, float], what: str, plan: Plan, scale: int = 1) -> Row:
    """``scale`` times ``plan.provider_notes`` notes; the mixed run also enriches once while still failing."""
    started = time.perf_counter()
    count = min(300, plan.provider_notes * scale)
    r = run_provider_faults(url, count, rates, plan.seed, faulty_enrich=what == "all mixed")
    faults: dict[str, int] = {}
    for phase in r.phases:
        for kind, n in phase.faults.items():
            faults[kind] = faults.get(kind, 0) + n
    injected = ", ".join(f"{n} {k}" for k, n in sorted(faults.items())) or "none"
    requests = sum(p.requests for p in r.phases)
    return Row(
        f"LLM provider: {what}",
        store,
        f"{injected} in {requests} requests; {r.pending_after_add} of {r.notes} notes left pending",
        f"{len(r.lost)} notes lost, {len(r.changed)} changed, {len(r.emptied)} emptied; "
        f"{r.not_enriched_at_end} not enriched after healing; {len(r.violations)} retry-rule breaches",
        time.perf_counter() - started,
        r.ok,
        r.as_dict(),
    )


def markdown(rows: list[Row]) -> str:
    out = [
        "| fault injected | store | how many | lost | s | ok |",
        "|---|---|---|---|---:|---|",
    ]
    for r in rows:
        ok = "yes" if r.ok else "NO"
        out.append(f"| {r.fault} | {r.store} | {r.injected} | {r.lost} | {r.seconds:.1f} | {ok} |")
    return "\n".join(out)
