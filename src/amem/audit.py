"""``amem audit``: how faithful is what the LLM wrote into a scope's memory?

Reads what is stored (notes, their evolve versions, links, and the LLM calls' refusals) and measures it
against the scope's own conversation, the way a reviewer would: words no note of the scope contains,
words of the prompts' examples, loops, reasons that name nothing the two notes share, tags on most notes.
It needs a store and a scope only; it writes nothing. Cost: a few queries per note (offline report).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pydantic import BaseModel, Field

from .notes import EnrichState, Note, NoteStatus, Scope, VersionCause
from .steps import ground, guard
from .store import Store

#: A context or update with this many words found nowhere in the conversation counts as invented.
INVENTED_WORDS = 2


class Example(BaseModel):
    note_id: str
    text: str
    detail: str = ""


class FieldAudit(BaseModel):
    """Texts of one kind checked against the conversation."""

    checked: int = 0
    grounded: int = 0  # fewer than INVENTED_WORDS words found nowhere in the conversation
    share_grounded: float | None = None
    examples: list[Example] = Field(default_factory=list)


class LinkAudit(BaseModel):
    links: int = 0
    naming_shared: int = 0  # the reason names a word both notes hold
    share_naming_shared: float | None = None
    distinct_reasons: int = 0
    distinct_per_link: float | None = None
    top_reasons: list[tuple[str, int]] = Field(default_factory=list)
    examples: list[Example] = Field(default_factory=list)


class FindingAudit(BaseModel):
    count: int = 0
    examples: list[Example] = Field(default_factory=list)


class TagAudit(BaseModel):
    notes: int = 0
    distinct_tags: int = 0
    max_share: float | None = None
    top: list[tuple[str, int, float]] = Field(default_factory=list)  # tag, notes, share
    over_limit: list[str] = Field(default_factory=list)  # tags on more than guard.TAG_SHARE of notes


class RefusalAudit(BaseModel):
    calls_with_refusals: int = 0
    by_field: dict[str, dict[str, int]] = Field(default_factory=dict)  # field -> action -> count
    examples: list[Example] = Field(default_factory=list)


class AuditReport(BaseModel):
    notes: int = 0
    enriched: int = 0
    contexts: FieldAudit = Field(default_factory=FieldAudit)
    updates: FieldAudit = Field(default_factory=FieldAudit)
    links: LinkAudit = Field(default_factory=LinkAudit)
    leaks: FindingAudit = Field(default_factory=FindingAudit)
    loops: FindingAudit = Field(default_factory=FindingAudit)
    tags: TagAudit = Field(default_factory=TagAudit)
    refusals: RefusalAudit = Field(default_factory=RefusalAudit)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _keep(examples: list[Example], example: Example, limit: int) -> None:
    if len(examples) < limit:
        examples.append(example)


def audit(store: Store, scope: Scope, examples: int = 5) -> AuditReport:
    """The faithfulness report of ``scope`` (every note it can read, every status)."""
    notes = list(store.iter_notes(scope))
    report = AuditReport(notes=len(notes))
    by_id = {n.id: n for n in notes}
    vocab = ground.Sources.of([n.content for n in notes], [n.event_time for n in notes])
    leaks = ground.prompt_leaks()
    enriched = [n for n in notes if n.state == EnrichState.enriched]
    report.enriched = len(enriched)

    def texts_of(note: Note) -> Iterable[tuple[str, str]]:
        yield "context", note.context
        for kw in note.keywords:
            yield "keyword", kw

    def findings(note_id: str, kind: str, text: str) -> None:
        leaked = ground.leaked_words(text, leaks, vocab.stems)
        leaked += [
            w for w in ground.tokens(text) if w.lower() in ground.PROMPT_WORDS and w.lower() not in leaked
        ]
        leaked = [w for w in leaked if not vocab.supports(w)]
        if leaked:
            report.leaks.count += 1
            _keep(
                report.leaks.examples,
                Example(note_id=note_id, text=text, detail=f"{kind}: {', '.join(leaked)}"),
                examples,
            )
        if kind != "keyword" and ground.has_loop(text):
            report.loops.count += 1
            _keep(report.loops.examples, Example(note_id=note_id, text=text, detail=kind), examples)

    def grounded(audit_: FieldAudit, note_id: str, text: str) -> None:
        audit_.checked += 1
        unknown = ground.unsupported_words(text, vocab)
        if len(unknown) < INVENTED_WORDS:
            audit_.grounded += 1
        else:
            _keep(audit_.examples, Example(note_id=note_id, text=text, detail=", ".join(unknown)), examples)

    for note in enriched:
        grounded(report.contexts, note.id, note.context)
        for kind, text in texts_of(note):
            findings(note.id, kind, text)
    for note in notes:
        if note.version < 2:
            continue
        for version in store.versions(note.id):
            if version.cause == VersionCause.evolve and version.context:
                grounded(report.updates, note.id, version.context)
                findings(note.id, "update", version.context)
    report.contexts.share_grounded = _share(report.contexts.grounded, report.contexts.checked)
    report.updates.share_grounded = _share(report.updates.grounded, report.updates.checked)

    reasons: Counter[str] = Counter()
    for link in store.iter_links(scope):
        source, target = by_id.get(link.source_id), by_id.get(link.target_id)
        if source is None or target is None:
            continue
        report.links.links += 1
        reasons[link.reason] += 1
        findings(link.source_id, "link reason", link.reason)
        shared = ground.own_stems(source) & ground.own_stems(target)
        if ground.content_stems(link.reason) & shared:
            report.links.naming_shared += 1
        else:
            _keep(
                report.links.examples,
                Example(note_id=link.source_id, text=link.reason, detail=f"-> {link.target_id}"),
                examples,
            )
    report.links.share_naming_shared = _share(report.links.naming_shared, report.links.links)
    report.links.distinct_reasons = len(reasons)
    report.links.distinct_per_link = _share(len(reasons), report.links.links)
    report.links.top_reasons = reasons.most_common(examples)

    active = [n for n in enriched if n.status == NoteStatus.active]
    per_tag: Counter[str] = Counter(t for n in active for t in set(n.tags))
    report.tags.notes = len(active)
    report.tags.distinct_tags = len(per_tag)
    if active:
        report.tags.top = [(t, c, round(c / len(active), 4)) for t, c in per_tag.most_common(examples)]
        report.tags.max_share = report.tags.top[0][2] if report.tags.top else None
        report.tags.over_limit = [t for t, c in per_tag.items() if c / len(active) > guard.TAG_SHARE]

    seen: set[str] = set()
    for note in notes:
        for call in store.llm_calls(note.id):
            if call.id in seen or not call.refused:
                continue
            seen.add(call.id)
            report.refusals.calls_with_refusals += 1
            for refusal in call.refused:
                actions = report.refusals.by_field.setdefault(refusal.field, {})
                actions[refusal.action] = actions.get(refusal.action, 0) + 1
                detail = f"{refusal.field} {refusal.action}: {refusal.reason}"
                _keep(
                    report.refusals.examples,
                    Example(note_id=refusal.note_id or "", text=refusal.text, detail=detail),
                    examples,
                )
    return report
