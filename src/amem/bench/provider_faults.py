"""Write notes through a faulty LLM provider, heal it, enrich, and check that nothing was lost or emptied.

The retry rule this run checks, as the code implements it:

- ``http_retry.post_with_retry`` (the provider edge) is the only place that retries, and only transport
  faults (timeout, cut connection, 408/409/429/5xx): one provider request is at most ``1 + max_retries``
  HTTP requests, all with the same body. A 200 answer is never re-sent.
- ``LLMRunner.run`` makes one recorded ``LLMCall`` of 1 provider request, or 2 when the first answer was
  unusable (the repair re-prompt, a different body); ``attempts`` says which. An unreachable provider ends
  the call at once: ``requests <= (1 + max_retries) * sum(attempts)``.
- The pipeline never repeats a call: ``add`` makes one call; ``add_many`` makes one batch call, then one
  call per note only when the batch answer was unusable or left a note out (a different prompt, not a
  retry), and none when the provider was unreachable (the whole batch is stored pending); ``enrich`` makes
  one call per pending note in turn and stops at the first unreachable one. A failed call leaves its note
  stored as ``pending``, never dropped or emptied; only an unusable answer counts as an enrich attempt.
"""

from __future__ import annotations

import itertools
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..config import Settings
from ..memory import Memory
from ..notes import EnrichState, LLMCall, Note, NoteInput, NoteVersion, VersionCause
from ..prompts import batch as batch_prompt
from ..prompts import repair as repair_prompt
from ..store import Filters, store_kind
from .flaky import CONTENT_FAULTS, FAULTS, FlakyLLMServer, Served

Enricher = Callable[[Settings], object]
_VOCAB = (
    "harbour lantern orchard violin glacier pottery meadow compass saffron canyon quartz tundra marble "
    "falcon cobalt juniper pebble citadel mosaic thistle vellum ember cedar lagoon beacon walnut prairie "
    "sextant tapestry kiln bramble cinder nectar obsidian parsley quarry ravine sorrel tinder umber"
).split()
_SPEAKERS = ("Ana", "Ben", "Caro", "Dev")


@dataclass
class Phase:
    """What one phase cost at the provider: HTTP requests and injected faults, against recorded calls."""

    name: str
    requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    calls: int = 0  # recorded LLM calls that reached the provider (cached ones excluded)
    cached: int = 0
    attempts: int = 0  # provider requests the runner made: 1 per call, 2 with a repair re-prompt
    repaired: int = 0  # calls whose first answer was unusable and whose repair worked
    unreachable: int = 0  # calls that ended because the provider could not be reached
    failed: int = 0  # calls that gave nothing usable (unreachable or two unusable answers)
    request_bound: int = 0  # what the retry rule allows: requests <= (1 + max_retries) * attempts
    seconds: float = 0.0


@dataclass
class ProviderFaultReport:
    store: str
    notes: int
    seed: int
    rates: dict[str, float]
    max_retries: int
    phases: list[Phase] = field(default_factory=list)
    stored: int = 0
    pending_after_add: int = 0
    enriched_after_add: int = 0
    enriched_at_end: int = 0
    not_enriched_at_end: int = 0
    lost: list[str] = field(default_factory=list)  # ids (or input numbers) missing from the store
    changed: list[str] = field(default_factory=list)  # content, metadata or event time differs from input
    emptied: list[str] = field(default_factory=list)  # defaults invented, or enriched with empty attributes
    unsearchable: list[str] = field(default_factory=list)  # a pending note search does not find
    violations: list[str] = field(default_factory=list)  # breaches of the retry rule
    errors: list[str] = field(default_factory=list)  # exceptions raised to the caller by add / add_many

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)

    def problems(self) -> list[str]:
        out = [f"{name}: {items[:5]}" for name, items in self._lists().items() if items]
        if self.stored != self.notes:
            out.append(f"stored {self.stored} of {self.notes} notes")
        if self.not_enriched_at_end:
            out.append(f"{self.not_enriched_at_end} note(s) not enriched after healing")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()

    def _lists(self) -> dict[str, list[str]]:
        return {
            "lost": self.lost,
            "changed": self.changed,
            "emptied": self.emptied,
            "unsearchable": self.unsearchable,
            "violations": self.violations,
            "errors": self.errors,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def make_inputs(count: int, seed: int) -> list[NoteInput]:
    """Distinct notes (no duplicate folding) with metadata and event times that must survive unchanged."""
    rng = random.Random(seed)
    start = datetime(2023, 5, 1, 9, tzinfo=UTC)
    out = []
    for i in range(count):
        speaker = _SPEAKERS[i % len(_SPEAKERS)]
        words = rng.sample(_VOCAB, 5)
        out.append(
            NoteInput(
                content=f"{speaker}: entry {i} is about the {words[0]} near the {words[1]}, "
                f"with {words[2]}, {words[3]} and {words[4]}.",
                event_time=start + timedelta(hours=7 * i),
                metadata={"i": i, "speaker": speaker, "source": "provider-faults"},
            )
        )
    return out


def amem_env(settings: Settings) -> dict[str, str]:
    """The AMEM_* variables that make the ``amem`` command use ``settings``' store and provider."""
    return {
        "AMEM_LLM": settings.llm,
        "AMEM_EMBEDDER": settings.embedder,
        "AMEM_DATABASE_URL": settings.database_url,
        "AMEM_LLM_BASE_URL": settings.llm_base_url,
        "AMEM_LLM_TIMEOUT": str(settings.llm_timeout),
        "AMEM_LLM_MAX_RETRIES": str(settings.llm_max_retries),
        "AMEM_LLM_RETRY_BASE": str(settings.llm_retry_base),
    }


def _enrich_in_process(settings: Settings) -> object:
    with Memory(settings=settings) as mem:
        return mem.enrich()


def run_provider_faults(
    store_url: str,
    notes: int,
    rates: dict[str, float],
    seed: int,
    *,
    batch_size: int = 4,
    timeout: float = 1.0,
    max_retries: int = 2,
    retry_base: float = 0.02,
    faulty_enrich: bool = False,
    enrich: Enricher | None = None,
) -> ProviderFaultReport:
    """Add ``notes`` notes (alternating single adds and ``add_many`` batches) through a provider failing at
    ``rates``; optionally run one ``enrich`` while it still fails; heal it and run ``enrich`` (``enrich``:
    e.g. the ``amem enrich`` command; default ``Memory.enrich``); check every note and the retry rule."""
    if not 0 < notes <= 300:
        raise ValueError("notes must be between 1 and 300 (the run reads every LLM call record back)")
    inputs = make_inputs(notes, seed)
    report = ProviderFaultReport(
        store=store_kind(store_url),
        notes=notes,
        seed=seed,
        rates=dict(rates),
        max_retries=max_retries,
    )
    with FlakyLLMServer(rates, seed=seed, hang=timeout + 1.0) as server:
        settings = Settings(
            home=Path(tempfile.gettempdir()),  # unused: the store is named by URL
            llm=f"openai:{server.model}",
            embedder="fake",
            database_url=store_url,
            llm_base_url=server.url,
            llm_timeout=timeout,
            llm_max_retries=max_retries,
            llm_retry_base=retry_base,
        )
        ids = _add_phase(settings, server, inputs, batch_size, report)
        if faulty_enrich:
            _enrich_phase("enrich-faulty", settings, server, _enrich_in_process, report)
        server.heal()
        _enrich_phase("enrich-healed", settings, server, enrich or _enrich_in_process, report)
    with Memory(settings=settings) as mem:
        _check_final(mem, inputs, ids, report)
    return report


# -- phases --------------------------------------------------------------------------------------
def _add_phase(
    settings: Settings,
    server: FlakyLLMServer,
    inputs: list[NoteInput],
    size: int,
    report: ProviderFaultReport,
) -> list[str | None]:
    ids: list[str | None] = [None] * len(inputs)
    first, faults = server.requests, Counter(server.faults)
    started = time.perf_counter()
    calls: list[LLMCall] = []
    with Memory(settings=settings, batch_size=size) as mem:
        for group, as_batch in _operations(len(inputs), size):
            seen = {c.id for c in _all_calls(mem)}
            try:
                if as_batch:
                    made = mem.add_many([inputs[i] for i in group], batch_size=size)
                else:
                    one = inputs[group[0]]
                    made = [mem.add(one.content, event_time=one.event_time, metadata=one.metadata)]
            except Exception as exc:  # reported, not raised: a lost note is a finding, not a crash
                report.errors.append(f"notes {group}: {type(exc).__name__}: {exc}")
                continue
            for i, note in zip(group, made, strict=True):
                ids[i] = note.id
            new = [c for c in _all_calls(mem) if c.id not in seen]
            calls.extend(new)
            _check_operation(mem, [n.id for n in made], as_batch, new, report)
        phase = _phase("add", server, first, faults, calls, started, settings.llm_max_retries, report)
        report.phases.append(phase)
        _check_after_add(mem, inputs, ids, report)
    return ids


def _enrich_phase(
    name: str, settings: Settings, server: FlakyLLMServer, enrich: Enricher, report: ProviderFaultReport
) -> None:
    with Memory(settings=settings) as mem:
        todo = {n.id for n in mem.list(limit=10_000, filters=Filters(states=[EnrichState.pending]))}
        seen = {c.id for c in _all_calls(mem)}
    first, faults = server.requests, Counter(server.faults)
    started = time.perf_counter()
    enrich(settings)
    with Memory(settings=settings) as mem:
        calls = [c for c in _all_calls(mem) if c.id not in seen]
        calls = _without_repairs(calls, sorted(todo), report, name)
        report.phases.append(
            _phase(name, server, first, faults, calls, started, settings.llm_max_retries, report)
        )
        subjects = [c.note_ids[0] for c in calls if c.note_ids]
        # one call per pending note; after an unreachable call (the last one) the run stops
        stopped = bool(calls) and _unreachable(calls[-1])
        if len(subjects) != len(set(subjects)) or not (
            set(subjects) <= todo if stopped else set(subjects) == todo
        ):
            report.violations.append(
                f"{name}: {len(todo)} pending note(s) but calls for {len(subjects)} "
                f"({len(set(subjects))} distinct): enrich must make exactly one call per pending note"
            )
        if any(_unreachable(c) for c in calls[:-1]):
            report.violations.append(f"{name}: enrich went on after the provider was unreachable")
        for call in calls:
            note = mem.store.get_note(call.note_ids[0]) if call.note_ids else None
            if note is not None and (note.state == EnrichState.enriched) != call.ok:
                report.violations.append(
                    f"{name}: note {note.id} is {note.state.value} after a call ok={call.ok}"
                )


def _operations(count: int, size: int) -> Iterator[tuple[list[int], bool]]:
    """Chunks of ``size`` notes: even chunks added one by one, odd chunks with one ``add_many``."""
    for n, start in enumerate(range(0, count, size)):
        group = list(range(start, min(count, start + size)))
        if n % 2 == 1 and len(group) > 1:
            yield group, True
        else:
            yield from (([i], False) for i in group)


def _without_repairs(
    calls: list[LLMCall], ids: list[str], report: ProviderFaultReport, where: str
) -> list[LLMCall]:
    """The calls but the grounding checks' repair calls: a repair is no retry of a failed call but a
    second, smaller question after a usable answer whose context said what its note does not. It must
    follow a successful call for the same note, once per note."""
    out: list[LLMCall] = []
    repaired: list[str] = []
    for call in calls:
        if call.step != repair_prompt.STEP:
            out.append(call)
            continue
        note = call.note_ids[0] if call.note_ids else ""
        asked = any(c.ok and note in c.note_ids for c in out)
        if note not in ids or note in repaired or not asked:
            report.violations.append(f"{where}: a repair call for {note or 'no note'} without its own answer")
        repaired.append(note)
    return out


def _all_calls(mem: Memory) -> list[LLMCall]:
    return mem.store.llm_calls(None, limit=100_000)


def _unreachable(call: LLMCall) -> bool:
    return not call.ok and (call.error or "").startswith("LLMUnavailable")


# -- checks --------------------------------------------------------------------------------------
def _check_operation(
    mem: Memory, ids: list[str], as_batch: bool, calls: list[LLMCall], report: ProviderFaultReport
) -> None:
    """One add or add_many: exactly the calls the pipeline rule allows, and a state that matches them."""
    calls = _without_repairs(calls, ids, report, "add_many" if as_batch else "add")
    states = {i: n.state for i, n in mem.store.get_notes(ids).items()}
    decided: dict[str, LLMCall] = {}  # each note's deciding call
    where = f"{'add_many' if as_batch else 'add'} of {len(ids)}"
    singles = calls
    if as_batch:
        head = calls[0] if calls else None
        if head is None or head.step != batch_prompt.STEP or head.note_ids[: len(ids)] != ids:
            report.violations.append(f"{where}: the first call is not the batch call for its notes")
            return
        singles = calls[1:]
        if _unreachable(head):
            decided = dict.fromkeys(ids, head)  # nothing more may be asked: all pending
            if singles:
                report.violations.append(
                    f"{where}: {len(singles)} call(s) after the provider was unreachable"
                )
        elif not head.ok and [c.note_ids[0] for c in singles] != ids:
            report.violations.append(f"{where}: an unusable batch answer must give each note one own call")
        elif head.ok:
            decided = dict.fromkeys(ids, head)
    subjects = [c.note_ids[0] for c in singles]
    if len(subjects) != len(set(subjects)) or not set(subjects) <= set(ids):
        report.violations.append(f"{where}: a note was asked about twice ({subjects})")
    if not as_batch and len(calls) != 1:
        report.violations.append(f"{where}: {len(calls)} calls for one note")
    decided.update({c.note_ids[0]: c for c in singles})
    for note_id in ids:
        call, state = decided.get(note_id), states.get(note_id)
        expected = EnrichState.enriched if call is not None and call.ok else EnrichState.pending
        if state != expected:
            report.violations.append(
                f"{where}: note {note_id} is {state} after its call (expected {expected})"
            )


def _phase(
    name: str,
    server: FlakyLLMServer,
    first: int,
    faults_before: Counter[str],
    calls: list[LLMCall],
    started: float,
    max_retries: int,
    report: ProviderFaultReport,
) -> Phase:
    live = [c for c in calls if not c.cached]
    phase = Phase(
        name=name,
        requests=server.requests - first,
        faults={k: v for k in FAULTS if (v := server.faults[k] - faults_before[k])},
        calls=len(live),
        cached=len(calls) - len(live),
        attempts=sum(c.attempts for c in live),
        repaired=sum(1 for c in live if c.ok and c.attempts == 2),
        unreachable=sum(1 for c in live if _unreachable(c)),
        failed=sum(1 for c in live if not c.ok),
        request_bound=(max_retries + 1) * sum(c.attempts for c in live),
        seconds=round(time.perf_counter() - started, 3),
    )
    report.violations.extend(f"{name}: {v}" for v in retry_violations(server.log[first:], live, max_retries))
    return phase


def retry_violations(log: list[Served], calls: list[LLMCall], max_retries: int) -> list[str]:
    """Match the server's request log against the recorded calls of a phase (one client, in order).

    Requests with the same body in a row, after transport faults, are one provider request and its
    retries; an answered request ends it. So the log splits into runs, and the rule says: no run longer
    than ``1 + max_retries``; a run the client gave up on has exactly that length and matches an
    unreachable call; the runs number ``sum(attempts)``; a body answered is never sent again at once.
    """
    out: list[str] = []
    runs: list[list[Served]] = []
    for served in log:
        if runs and runs[-1][-1].digest == served.digest and not runs[-1][-1].answered:
            runs[-1].append(served)
        else:
            runs.append([served])
    for a, b in itertools.pairwise(runs):
        if a[-1].answered and a[-1].digest == b[0].digest:
            out.append("a request answered with HTTP 200 was sent again (a retry above the provider)")
    for run in runs:
        if len(run) > max_retries + 1:
            out.append(f"{len(run)} requests with one body (at most {max_retries + 1} allowed)")
        elif not run[-1].answered and len(run) != max_retries + 1:
            out.append(f"gave up after {len(run)} requests, not {max_retries + 1}")
    attempts = sum(c.attempts for c in calls)
    if len(runs) != attempts:
        out.append(f"{len(runs)} provider requests on the wire, but the calls record {attempts} attempts")
    gave_up = sum(1 for run in runs if not run[-1].answered)
    unreachable = sum(1 for c in calls if _unreachable(c))
    if gave_up != unreachable:
        out.append(f"{gave_up} provider requests given up, but {unreachable} calls recorded unreachable")
    content_faults = sum(1 for run in runs if run[-1].outcome in CONTENT_FAULTS)
    second = sum(1 for c in calls if c.attempts == 2)
    if second > content_faults:
        out.append(f"{second} repair re-prompts but only {content_faults} unusable answers")
    return out


def _same_as_input(note: Note, given: NoteInput) -> bool:
    return (
        note.content == given.content.strip()
        and note.metadata == given.metadata
        and given.event_time is not None
        and note.event_time == given.event_time
    )


def _honest_pending(note: Note, versions: list[NoteVersion]) -> bool:
    """Stored with no invented attributes and the reason why; later versions can only be a neighbour's
    evolution (which rewrites context and tags, never keywords) until its own call succeeds."""
    first = versions[0] if versions else None
    return (
        first is not None
        and first.cause == VersionCause.create
        and first.state == EnrichState.pending
        and not (first.keywords or first.tags or first.context)
        and all(v.cause == VersionCause.evolve for v in versions[1:])
        and not note.keywords
        and bool(note.last_error)
        # an unusable answer is an attempt; an unreachable provider is none
        and (note.enrich_attempts >= 1) != (note.last_error or "").startswith("LLMUnavailable")
    )


def _check_after_add(
    mem: Memory, inputs: list[NoteInput], ids: list[str | None], report: ProviderFaultReport
) -> None:
    """Every note stored as given; a pending one keeps no invented attributes, says why, and is searchable."""
    stored = mem.store.get_notes([i for i in ids if i is not None])
    report.stored = len(stored)
    for n, (given, note_id) in enumerate(zip(inputs, ids, strict=True)):
        note = stored.get(note_id) if note_id else None
        if note is None:
            report.lost.append(note_id or f"input {n}")
            continue
        if not _same_as_input(note, given):
            report.changed.append(note.id)
        if note.state == EnrichState.enriched:
            report.enriched_after_add += 1
            if not (note.keywords and note.tags and note.context):
                report.emptied.append(note.id)
            continue
        report.pending_after_add += 1
        if not _honest_pending(note, mem.store.versions(note.id)):
            report.emptied.append(note.id)
        hits = mem.search(note.content, k=5, expand=False, track=False)
        if note.id not in {h.note.id for h in hits}:
            report.unsearchable.append(note.id)


def _check_final(
    mem: Memory, inputs: list[NoteInput], ids: list[str | None], report: ProviderFaultReport
) -> None:
    """After healing: every note enriched with real attributes, its input intact, and the count exact."""
    stored = mem.store.get_notes([i for i in ids if i is not None])
    if mem.count() != len(inputs):
        report.lost.append(f"the store holds {mem.count()} notes, not {len(inputs)}")
    for given, note_id in zip(inputs, ids, strict=True):
        note = stored.get(note_id) if note_id else None
        if note is None:
            if note_id is not None:
                report.lost.append(note_id)
            continue
        if not _same_as_input(note, given):
            report.changed.append(note.id)
        if note.state != EnrichState.enriched:
            report.not_enriched_at_end += 1
        elif not (note.keywords and note.tags and note.context):
            report.emptied.append(note.id)
        else:
            report.enriched_at_end += 1
        if note.enrich_attempts and not any(
            v.cause == VersionCause.enrich for v in mem.store.versions(note.id)
        ):
            report.changed.append(f"{note.id}: pending once but no 'enrich' version")
