"""Concurrency: threads and processes writing and searching one store at once, then proof that no write
was lost, no link is torn or crosses scopes, and no lock error reached a caller; with throughput under
that load next to a single-thread baseline measured in the same run.

The threads share one ``Memory`` (each through its own scoped view), as the API server shares one: that
is what exercises the SQLite store's single guarded connection and the PostgreSQL pool. The processes
each open their own, as separate server or CLI processes would: that is what exercises SQLite's file
locks (WAL, busy timeout) and PostgreSQL's row locks between connections. Workers share three scopes,
so they evolve and lock each other's notes, and every scope holds notes of several writers.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..store import store_kind
from .crash import PEOPLE, TOPICS, _context, open_memory
from .integrity import check_store, note_facts
from .metrics import percentile

#: an optimistic version conflict (``update`` saw the note change under it) is retried this many times,
#: as a client is told to ("read it again and retry"); only a conflict that never clears is an error
CONFLICT_RETRIES = 20
SCOPES = 3


@dataclass
class WorkerResult:
    """What one worker did and saw; JSON-serialisable so processes can hand it back through a file."""

    name: str
    ids: list[str] = field(default_factory=list)
    updates: list[tuple[str, int]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    conflicts: int = 0
    ms: dict[str, list[float]] = field(default_factory=dict)
    notes: int = 0


@dataclass
class Throughput:
    workers: int
    seconds: float
    notes_per_s: float
    adds_per_s: float
    searches_per_s: float
    add_p50_ms: float
    add_p95_ms: float
    search_p50_ms: float
    search_p95_ms: float


@dataclass
class LoadReport:
    """Counts from one load run; ``ok`` when nothing surfaced, nothing was lost and the store is sound."""

    store: str
    threads: int
    processes: int
    ops_per_worker: int
    errors: dict[str, int] = field(default_factory=dict)
    conflicts_retried: int = 0
    writes_returned: int = 0
    lost_writes: int = 0
    lost_updates: int = 0
    lost_links: int = 0
    consistency: dict[str, Any] = field(default_factory=dict)
    baseline: Throughput | None = None
    load: Throughput | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        lost = self.lost_writes + self.lost_updates + self.lost_links
        return not self.errors and not lost and bool(self.consistency.get("ok"))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def work(mem: Any, name: str, ops: int, seed: int) -> WorkerResult:
    """``ops`` operations drawn from ``seed``: add 40%, add_many of 3 15%, search 35%, update 5%,
    link by hand 5%. Every exception is counted by type and message; none stops the worker."""
    rng = random.Random(f"{seed}:{name}")
    out = WorkerResult(name)
    timings: dict[str, list[float]] = {}
    for i in range(ops):
        roll = rng.random()
        kind = "add" if roll < 0.4 else "add_many" if roll < 0.55 else "search" if roll < 0.9 else "edit"
        if kind == "edit" and len(out.ids) < 2:
            kind = "add"
        began = time.perf_counter()
        try:
            if kind == "add":
                out.ids.append(mem.add(_sentence(rng, f"{name} {i}")).id)
                out.notes += 1
            elif kind == "add_many":
                stored = mem.add_many([_sentence(rng, f"{name} {i}.{j}") for j in range(3)], batch_size=3)
                out.ids.extend(n.id for n in stored)
                out.notes += len(stored)
            elif kind == "search":
                person, (verb, thing) = rng.choice(PEOPLE), rng.choice(TOPICS)
                mem.search(f"when did {person} {verb} {thing}", k=5)
            elif roll < 0.95:
                _update(mem, rng.choice(out.ids), f"{name} edit {i}", out)
            else:
                source, target = rng.sample(out.ids, 2)
                mem.link(source, target, reason=f"{name} linked by hand")
                out.links.append((source, target))
        except Exception as exc:  # every error is a finding, counted and reported
            key = f"{kind}: {type(exc).__name__}: {str(exc)[:120]}"
            out.errors[key] = out.errors.get(key, 0) + 1
            continue
        timings.setdefault(kind, []).append((time.perf_counter() - began) * 1000)
    out.ms = timings
    return out


def _sentence(rng: random.Random, tag: str) -> str:
    person, (verb, thing) = rng.choice(PEOPLE), rng.choice(TOPICS)
    return f"{person}: I {verb} {thing} again, entry {tag}."


def _update(mem: Any, note_id: str, tag: str, out: WorkerResult) -> None:
    for _ in range(CONFLICT_RETRIES):
        note = mem.get(note_id)
        try:
            new = mem.update(note_id, context=f"{note.content} Edited as {tag}.")
        except StoreError as exc:
            if "changed while" not in str(exc):
                raise
            out.conflicts += 1
            continue
        out.updates.append((note_id, new.version))
        return
    raise StoreError(f"note {note_id}: update conflicted {CONFLICT_RETRIES} times in a row")


def _scope(w: int) -> str:
    return f"load-{w % SCOPES}"


def _process(url: str, workdir: str, w: int, ops: int, seed: int, ready: Any, go: Any) -> None:
    result = WorkerResult(f"p{w}")
    try:
        mem = open_memory(url, Path(workdir), _scope(w))
        ready.release()
        go.wait()
        result = work(mem, f"p{w}", ops, seed)
        mem.close()
    except Exception as exc:  # opening or closing failed: that is a finding too
        result.errors[f"open/close: {type(exc).__name__}: {exc}"] = 1
        ready.release()
    Path(workdir, f"p{w}.json").write_text(json.dumps(asdict(result)), encoding="utf-8")


def _throughput(results: list[WorkerResult], seconds: float) -> Throughput:
    ms: dict[str, list[float]] = {}
    for r in results:
        for kind, values in r.ms.items():
            ms.setdefault(kind, []).extend(values)
    adds = ms.get("add", []) + ms.get("add_many", [])
    seconds = max(seconds, 1e-9)

    def pct(values: list[float], q: float) -> float:
        return round(percentile(values, q) or 0.0, 2)

    return Throughput(
        workers=len(results),
        seconds=round(seconds, 2),
        notes_per_s=round(sum(r.notes for r in results) / seconds, 1),
        adds_per_s=round(len(adds) / seconds, 1),
        searches_per_s=round(len(ms.get("search", [])) / seconds, 1),
        add_p50_ms=pct(ms.get("add", []), 0.5),
        add_p95_ms=pct(ms.get("add", []), 0.95),
        search_p50_ms=pct(ms.get("search", []), 0.5),
        search_p95_ms=pct(ms.get("search", []), 0.95),
    )


def run_load(
    store_url: str,
    workdir: Path,
    threads: int = 8,
    processes: int = 4,
    ops: int = 40,
    baseline_ops: int = 80,
    seed: int = 0,
) -> LoadReport:
    """Baseline (one thread alone), then ``threads`` threads sharing one Memory and ``processes``
    processes with their own, ``ops`` operations each, all released at once; then verify."""
    began = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    report = LoadReport(store_kind(store_url), threads, processes, ops)
    # the baseline runs first and alone; its memory is closed before forking (no pool threads cross a fork)
    base_mem = open_memory(store_url, workdir, "load-base")
    start = time.perf_counter()
    base = work(base_mem, "base", baseline_ops, seed)
    report.baseline = _throughput([base], time.perf_counter() - start)
    base_mem.close()

    ctx = _context()
    ready, go = ctx.Semaphore(0), ctx.Event()
    procs = [
        ctx.Process(target=_process, args=(store_url, str(workdir), w, ops, seed, ready, go))
        for w in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire(timeout=120)
    shared = open_memory(store_url, workdir, "load-x", llm=None)
    results: list[WorkerResult] = []
    lock = threading.Lock()

    def run_thread(t: int) -> None:
        go.wait()
        result = work(shared.scoped(user_id=_scope(t)), f"t{t}", ops, seed)
        with lock:
            results.append(result)

    pool = [threading.Thread(target=run_thread, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    start = time.perf_counter()
    go.set()
    for t in pool:
        t.join()
    for p in procs:
        p.join(600)
    elapsed = time.perf_counter() - start
    shared.close()
    for w in range(processes):
        path = workdir / f"p{w}.json"
        if not path.exists():
            results.append(WorkerResult(f"p{w}", errors={f"process p{w} left no result": 1}))
            continue
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["updates"] = [tuple(u) for u in raw["updates"]]
        raw["links"] = [tuple(lk) for lk in raw["links"]]
        results.append(WorkerResult(**raw))
    report.load = _throughput(results, elapsed)
    _verify(report, store_url, [base, *results])
    b, lo = report.baseline, report.load
    report.ratios = {
        "notes_per_s": round(lo.notes_per_s / max(b.notes_per_s, 1e-9), 2),
        "searches_per_s": round(lo.searches_per_s / max(b.searches_per_s, 1e-9), 2),
        "add_p50": round(lo.add_p50_ms / max(b.add_p50_ms, 1e-9), 2),
        "search_p50": round(lo.search_p50_ms / max(b.search_p50_ms, 1e-9), 2),
    }
    report.seconds = round(time.monotonic() - began, 2)
    return report


def _verify(report: LoadReport, url: str, results: list[WorkerResult]) -> None:
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
        report.conflicts_retried += r.conflicts
    report.errors = dict(errors)
    ids = [i for r in results for i in r.ids]
    report.writes_returned = len(ids)
    facts = note_facts(url, ids)
    report.lost_writes = sum(i not in facts for i in ids)
    report.lost_updates = sum(
        note_id not in facts or facts[note_id].causes.get(version) != "update"
        for r in results
        for note_id, version in r.updates
    )
    report.lost_links = sum(
        source not in facts or target not in facts[source].links
        for r in results
        for source, target in r.links
    )
    report.consistency = check_store(url).as_dict()


__all__ = ["LoadReport", "Throughput", "WorkerResult", "run_load", "work"]
