"""Crash safety: SIGKILL a writer at random moments of a long ingest, then prove nothing that returned was
lost, nothing half-written was left, and a rerun finishes the input without duplicates.

The writer is a separate process that ingests a deterministic input (``add`` and ``add_many`` mixed, with
repeated content) through ``Memory`` with the fake LLM, whose answers link each note to its neighbours
and evolve them, so kills land in multi-row transactions (note, links, versions, evolved neighbours).
After each write returns it appends a journal line (the note's id, outgoing links and version count; fsync)
saying what must survive. It marks a shared byte while inside a store transaction, so the parent can aim
half of its kills at an open transaction and report where every kill landed.

After the kills the store is checked from outside (``bench/integrity.py``); then one uninterrupted rerun
of the whole input must leave exactly one note per distinct content, each the one the journal named.
"""

from __future__ import annotations

import json
import mmap
import multiprocessing
import os
import random
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..store import store_kind
from .integrity import Consistency, check_store, ids_by_hash, note_facts

PEOPLE = ("Maya", "Tom", "Priya", "Ken", "Ana")
TOPICS = (
    ("hiked", "the lake trail"),
    ("baked", "sourdough bread"),
    ("repaired", "the old bicycle"),
    ("planned", "the Lisbon trip"),
    ("practised", "the violin piece"),
    ("painted", "the garden fence"),
)
SCOPE_USER = "crash"
#: a resumed writer redoes this many of the writes it had finished before the kill (they fold as duplicates)
OVERLAP = 2
# byte offsets in the shared flag file; bytes 4-7 count the ops the running writer has journaled
IN_TXN, READY, DONE = 0, 1, 2
OPS_DONE = slice(4, 8)
FLAG_BYTES = 8

Item = tuple[int, str, dict[str, Any]]  # (distinct content index, content, metadata)
Progress = Callable[[str], None]


@dataclass
class CrashReport:
    """Counts from one crash run; ``ok`` when every loss and inconsistency count is zero."""

    store: str
    kills: int = 0
    kills_in_transaction: int = 0
    kills_before_ready: int = 0
    writer_failures: list[str] = field(default_factory=list)
    ops: int = 0
    inputs: int = 0
    notes_expected: int = 0
    notes_returned: int = 0
    missing_notes: int = 0
    missing_links: int = 0
    missing_versions: int = 0
    split_notes: int = 0
    duplicates_after_rerun: int = 0
    absent_after_rerun: int = 0
    not_as_journaled: int = 0
    rerun_failed: str = ""
    after_kills: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    links: int = 0
    evolved_versions: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        losses = (
            self.missing_notes,
            self.missing_links,
            self.missing_versions,
            self.split_notes,
            self.duplicates_after_rerun,
            self.absent_after_rerun,
            self.not_as_journaled,
        )
        return (
            not any(losses)
            and not self.writer_failures
            and not self.rerun_failed
            and bool(self.after_kills.get("ok"))
            and bool(self.final.get("ok"))
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# -- the input ---------------------------------------------------------------------------------------
def make_input(notes: int, seed: int) -> list[list[Item]]:
    """Operations in order: one item is an ``add``, several an ``add_many``. About one item in ten
    repeats earlier content with a new source (a ``duplicate`` version), so resumes fold real duplicates."""
    rng = random.Random(seed)
    ops: list[list[Item]] = []
    made: list[str] = []
    while len(made) < notes:
        size = 1 if rng.random() < 0.6 else rng.randint(2, 4)
        op: list[Item] = []
        for _ in range(size):
            source = {"source": f"op{len(ops)}"}
            if made and rng.random() < 0.1:
                k = rng.randrange(len(made))
                op.append((k, "  " + made[k].upper() + " ", source))  # same content hash
            elif len(made) < notes:
                person, (verb, thing) = rng.choice(PEOPLE), rng.choice(TOPICS)
                friend = rng.choice([p for p in PEOPLE if p != person])
                made.append(f"{person}: I {verb} {thing} again on day {len(made)} with {friend}.")
                op.append((len(made) - 1, made[-1], source))
        if op:
            ops.append(op)
    return ops


_SHOWN = re.compile(r"^(N\d+) \[[^\]]*\] (.+)$", re.M)
_DAY = re.compile(r"day (\d+)")


def _enum(prop: dict[str, Any], key: str) -> list[str]:
    return list(prop.get("items", {}).get("properties", {}).get(key, {}).get("enum", []))


def linking_answer(messages: list[Any], schema: dict[str, Any] | None) -> dict[str, Any]:
    """The fake LLM's answer (``schema_answer``), adjusted to link every new note to up to two offered
    notes and to evolve the closest neighbour (its context gains the new note's day), for ``note`` and
    ``batch`` prompts alike."""
    from ..llm.fake import focus_text, schema_answer

    prompt = messages[-1].content
    answer: dict[str, Any] = schema_answer(prompt, schema)
    props = (schema or {}).get("properties", {})
    shown = dict(_SHOWN.findall(prompt))
    day = (_DAY.findall(focus_text(prompt)) or ["0"])[-1]
    if "links" in props:
        answer["links"] = [
            {"to": a, "why": "same person or activity"} for a in _enum(props["links"], "to")[:2]
        ]
    if "updates" in props:
        answer["updates"] = [
            {"note": a, "context": f"{shown[a]} Mentioned again on day {day}.", "tags": ["revisited"]}
            for a in _enum(props["updates"], "note")[:1]
            if a in shown
        ]
    if "notes" in props:
        offered = _enum(props["notes"]["items"]["properties"]["links"], "to")
        neighbours = [a for a in offered if a.startswith("N")]
        for entry in answer["notes"]:
            alias = entry["note"]
            previous = f"T{int(alias[1:]) - 1}"
            targets = neighbours[:1] + ([previous] if previous in offered else [])
            entry["links"] = [{"to": t, "why": "same person or activity"} for t in targets]
    return answer


# -- the writer (child process) ----------------------------------------------------------------------
def _flags(workdir: Path) -> mmap.mmap:
    with open(workdir / "flags.bin", "r+b") as f:
        return mmap.mmap(f.fileno(), FLAG_BYTES)


def _mark_transactions(store: Any, flags: mmap.mmap) -> None:
    """Set the IN_TXN byte while the writer is inside its outermost store transaction."""
    original = store.atomic
    depth = [0]

    @contextmanager
    def marked() -> Iterator[None]:
        depth[0] += 1
        flags[IN_TXN] = 1
        try:
            with original():
                yield
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                flags[IN_TXN] = 0

    store.atomic = marked


def open_memory(url: str, workdir: Path, scope_user: str = SCOPE_USER, llm: Any = None) -> Any:
    """A Memory with the fake linking LLM and the hash embedder, nothing read from the environment."""
    from ..config import Settings
    from ..embed.fake import FakeEmbedder
    from ..llm.fake import FakeLLM
    from ..memory import Memory

    settings = Settings.resolve({"home": workdir / "home", "llm": "fake", "embedder": "fake"}, env={})
    return Memory(
        store=url,
        llm=llm or FakeLLM(handler=linking_answer),
        embedder=FakeEmbedder(64),
        settings=settings,
        user_id=scope_user,
    )


def _last_done(journal: Path) -> int:
    last = -1
    if journal.exists():
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                last = max(last, int(json.loads(line)["op"]))
            except (ValueError, KeyError):
                continue  # a line torn by the kill: that op did not finish
    return last


def write(url: str, workdir: Path, notes: int, seed: int, final: bool) -> None:
    """Ingest the input, resuming just before the last journaled op (all of it when ``final``), and
    journal what each returned write left in the store."""
    flags = _flags(workdir)
    journal = workdir / "journal.jsonl"
    ops = make_input(notes, seed)
    start = 0 if final else max(0, _last_done(journal) + 1 - OVERLAP)
    mem = open_memory(url, workdir)
    _mark_transactions(mem.store, flags)
    flags[READY] = 1
    with open(journal, "a", encoding="utf-8") as out:
        for n in range(start, len(ops)):
            op = ops[n]
            if len(op) == 1:
                _, content, meta = op[0]
                stored = [mem.add(content, metadata=meta)]
            else:
                stored = mem.add_many([{"content": c, "metadata": m} for _, c, m in op], batch_size=4)
            entry = {
                "op": n,
                "notes": [_seen(mem, item[0], note.id) for item, note in zip(op, stored, strict=True)],
            }
            out.write(json.dumps(entry) + "\n")
            out.flush()
            os.fsync(out.fileno())
            flags[OPS_DONE] = (n + 1).to_bytes(4, "little")
    mem.close()
    flags[DONE] = 1


def _seen(mem: Any, index: int, note_id: str) -> dict[str, Any]:
    links = sorted(lk.target_id for lk in mem.store.links_for([note_id]) if lk.source_id == note_id)
    return {"c": index, "id": note_id, "links": links, "versions": len(mem.store.versions(note_id))}


def _child(url: str, workdir: str, notes: int, seed: int, final: bool, log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 2)
    try:
        write(url, Path(workdir), notes, seed, final)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(3)
    os._exit(0)


# -- the parent ----------------------------------------------------------------------------------------
def _context() -> Any:
    # fork starts a writer in milliseconds (amem already imported); spawn where fork is unavailable
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _reached(flags: mmap.mmap, target: int) -> bool:
    return int.from_bytes(flags[OPS_DONE], "little") >= target


def _wait(proc: Any, pred: Callable[[], bool], timeout: float, step: float = 0.0005) -> bool:
    """Until ``pred`` holds or the process has exited."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred() or not proc.is_alive():
            return True
        time.sleep(step)
    return pred()


def run_crash(
    store_url: str,
    workdir: Path,
    kills: int = 20,
    notes: int = 240,
    seed: int = 0,
    progress: Progress | None = None,
) -> CrashReport:
    """Kill the writer ``kills`` times (SIGKILL), restarting it after each; then check and rerun.
    Kill points are drawn from ``seed``: one kill in seven comes right after start (during open or
    migration); the others after a random number of ops, sized so the input outlasts the kills on a
    fast machine or a slow one, plus a few random milliseconds, and half of them wait for the writer
    to be inside a transaction."""
    began = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "flags.bin").write_bytes(bytes(FLAG_BYTES))
    journal = workdir / "journal.jsonl"
    journal.unlink(missing_ok=True)
    flags = _flags(workdir)
    ops = make_input(notes, seed)
    report = CrashReport(store=store_kind(store_url))
    report.ops, report.inputs = len(ops), sum(len(op) for op in ops)
    report.notes_expected = len({i for op in ops for i, _, _ in op})
    rng, ctx = random.Random(seed), _context()
    log = str(workdir / "writer.log")
    for k in range(kills):
        flags[:] = bytes(FLAG_BYTES)
        proc = ctx.Process(target=_child, args=(store_url, str(workdir), notes, seed, False, log))
        proc.start()
        if k % 7 == 3:
            time.sleep(rng.uniform(0.0, 0.05))
        else:
            _wait(proc, lambda: flags[READY] == 1, 120.0, 0.005)
            done = _last_done(journal) + 1
            left = len(ops) - done
            # at most 1/(kills left + 1) of what is left: even the largest draws leave ops for every kill
            target = rng.randint(1, max(1, left // (kills - k + 1))) + done
            _wait(proc, partial(_reached, flags, target), 300.0, 0.001)
            time.sleep(rng.uniform(0.0, 0.01))
            if rng.random() < 0.5:
                _wait(proc, lambda: flags[IN_TXN] == 1, 2.0)
        if not proc.is_alive():
            proc.join()
            if flags[DONE] != 1 or proc.exitcode != 0:
                report.writer_failures.append(f"writer {k} exited with {proc.exitcode}; see {log}")
            break  # the input is done: further kills would land on nothing but duplicate folding
        report.kills_in_transaction += flags[IN_TXN] == 1
        report.kills_before_ready += flags[READY] != 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        report.kills += 1
        if progress:
            progress(f"kill {report.kills}: in transaction={flags[IN_TXN] == 1}, op {_last_done(journal)}")
    expected = _journaled(journal)
    report.notes_returned = len(expected)
    report.split_notes = sum(len(ids) > 1 for ids, _, _ in expected.values())
    after = check_store(store_url)
    report.after_kills = after.as_dict()
    _compare(report, store_url, expected)
    _final_run(report, store_url, workdir, notes, seed, ctx, log, journal)
    report.seconds = round(time.monotonic() - began, 2)
    return report


def _journaled(journal: Path) -> dict[int, tuple[set[str], set[str], int]]:
    """content index -> (ids the writer was given for it, links seen on it, most versions seen)."""
    out: dict[int, tuple[set[str], set[str], int]] = {}
    if not journal.exists():
        return out
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        for seen in entry["notes"]:
            ids, links, versions = out.get(seen["c"], (set(), set(), 0))
            out[seen["c"]] = (ids | {seen["id"]}, links | set(seen["links"]), max(versions, seen["versions"]))
    return out


def _compare(report: CrashReport, url: str, expected: dict[int, tuple[set[str], set[str], int]]) -> None:
    """Every write that returned is there, with at least the links and versions it had then."""
    facts = note_facts(url, [i for ids, _, _ in expected.values() for i in ids])
    for ids, links, versions in expected.values():
        for nid in ids:
            got = facts.get(nid)
            if got is None:
                report.missing_notes += 1
                continue
            report.missing_links += len(links - got.links) if len(ids) == 1 else 0
            report.missing_versions += max(0, versions - got.versions) if len(ids) == 1 else 0


def _final_run(
    report: CrashReport,
    url: str,
    workdir: Path,
    notes: int,
    seed: int,
    ctx: Any,
    log: str,
    journal: Path,
) -> None:
    """One uninterrupted run of the whole input; then one note per content, the one the journal named."""
    proc = ctx.Process(target=_child, args=(url, str(workdir), notes, seed, True, log))
    proc.start()
    proc.join(600)
    if proc.is_alive():
        proc.kill()
        proc.join()
        report.rerun_failed = "the final rerun did not finish in 600 s"
    elif proc.exitcode != 0:
        report.rerun_failed = f"the final rerun exited with {proc.exitcode}; see {log}"
    final: Consistency = check_store(url)
    report.final = final.as_dict()
    report.links = final.links
    expected = _journaled(journal)
    by_hash = ids_by_hash(url)
    from ..notes import content_hash

    contents = {i: c for op in make_input(notes, seed) for i, c, _ in op}
    for index, content in contents.items():
        ids = by_hash.get((content_hash(content), SCOPE_USER, None, None), [])
        report.duplicates_after_rerun += max(0, len(ids) - 1)
        report.absent_after_rerun += not ids
        journaled = expected.get(index, (set(), set(), 0))[0]
        report.not_as_journaled += bool(ids) and journaled != set(ids[:1])
    facts = note_facts(url, [i for ids in by_hash.values() for i in ids])
    report.evolved_versions = sum(cause == "evolve" for f in facts.values() for cause in f.causes.values())
