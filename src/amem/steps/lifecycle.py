"""The upkeep rules as pure functions: importance, what decays, what a merge makes of two notes.

No storage and no LLM here: ``consolidate.py`` gathers the data, asks these what to change and writes
the changes as versions. Keeping the rules pure keeps them testable one by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..config import Settings
from ..notes import EnrichState, Link, Note, NoteStatus

#: A link's weight never grows past this, however often it is used.
MAX_LINK_WEIGHT = 3.0
#: Added to a link's (decayed) weight each time search returns both of its ends.
CO_RETRIEVAL_STEP = 0.1
#: Added when the LLM proposes a link that already exists (it re-confirmed it).
CONFIRM_STEP = 0.5
#: Weight of the link from a superseded note to the note that replaced it: expansion follows it first.
SUPERSEDE_WEIGHT = 2.0
MAX_KEYWORDS, MAX_TAGS = 8, 6


@dataclass(frozen=True)
class Policy:
    link_half_life_days: float = 90.0
    prune_below: float = 0.1
    note_half_life_days: float = 90.0
    archive_below: float = 0.05
    archive_after_days: float = 30.0
    merge_similarity: float = 0.92

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            link_half_life_days=settings.link_half_life_days,
            prune_below=settings.prune_below,
            note_half_life_days=settings.note_half_life_days,
            archive_below=settings.archive_below,
            archive_after_days=settings.archive_after_days,
            merge_similarity=settings.merge_similarity,
        )


def last_touched(note: Note) -> datetime:
    """When the note was last written, changed or returned by a search."""
    times = [note.ingest_time, note.updated_at]
    if note.last_retrieved_at is not None:
        times.append(note.last_retrieved_at)
    return max(times)


def importance(note: Note, degree: int, now: datetime, policy: Policy) -> float:
    """0..1: half recency (halving every ``note_half_life_days`` since last touched), three tenths use
    (saturating in retrievals) and two tenths connectivity (saturating in links). A note someone keeps
    finding, or that other notes point at, stays; one nobody has touched for a year, with no links,
    fades."""
    idle = max(0.0, (now - last_touched(note)).total_seconds() / 86400.0)
    half = policy.note_half_life_days
    recency = 0.5 ** (idle / half) if half > 0 else 1.0
    use = 1.0 - math.exp(-note.retrievals / 5.0)
    links = 1.0 - math.exp(-degree / 3.0)
    return 0.5 * recency + 0.3 * use + 0.2 * links


def archive_reason(note: Note, degree: int, now: datetime, policy: Policy) -> str | None:
    """Why consolidation should archive the note, or None to keep it. A pin protects it from both
    rules; nothing is archived that is not active."""
    if note.pinned or note.status != NoteStatus.active:
        return None
    if note.expires_at is not None and note.expires_at <= now:
        return f"expired at {note.expires_at.isoformat()}"
    age = (now - note.ingest_time).total_seconds() / 86400.0
    if policy.archive_below <= 0 or age < policy.archive_after_days:
        return None
    score = importance(note, degree, now, policy)
    if score < policy.archive_below:
        return f"importance {score:.3f} < {policy.archive_below}"
    return None


def should_prune(link: Link, now: datetime, policy: Policy) -> bool:
    return (
        policy.prune_below > 0 and link.effective_weight(now, policy.link_half_life_days) < policy.prune_below
    )


def strengthened(link: Link, uses: int, now: datetime, policy: Policy, step: float) -> Link:
    """The link after ``uses`` confirmations of ``step`` each, counted from its decayed weight."""
    weight = link.effective_weight(now, policy.link_half_life_days) + step * uses
    return link.model_copy(update={"weight": min(MAX_LINK_WEIGHT, weight), "updated_at": now})


def speakers_differ(a: Note, b: Note) -> bool:
    """Both notes name their speaker (metadata "speaker", as conversation ingestion records) and the
    speakers differ: "Thanks, Jon!" and "Thanks, Gina!" are two people's words, never one fact, and one
    person's remark does not replace another's."""
    one, two = a.metadata.get("speaker"), b.metadata.get("speaker")
    return bool(one) and bool(two) and str(one).casefold() != str(two).casefold()


def survivor_first(a: Note, b: Note) -> tuple[Note, Note]:
    """Which of two duplicates stays: a pinned one, else the older (its id is the one already cited)."""
    if b.pinned and not a.pinned:
        return b, a
    if a.pinned and not b.pinned:
        return a, b
    return (a, b) if (a.ingest_time, a.id) <= (b.ingest_time, b.id) else (b, a)


def source_of(note: Note, with_content: bool) -> dict[str, Any]:
    """What a note brings into the note it is folded into: enough to cite it and to find it again."""
    out: dict[str, Any] = {
        "note_id": note.id,
        "event_time": note.event_time.isoformat(),
        "ingest_time": note.ingest_time.isoformat(),
        "metadata": dict(note.metadata),
    }
    if with_content:
        out["content"] = note.content
    return out


def merged(survivor: Note, absorbed: Note, now: datetime) -> Note:
    """The survivor after folding ``absorbed`` in: both provenances (and everything the absorbed note had
    itself folded in), union of keywords and tags, the stronger protections. Content never changes: a
    near duplicate's own wording stays in its source entry and in its own (merged) note."""
    same_text = absorbed.content_hash == survivor.content_hash
    keywords, tags, context, state = survivor.keywords, survivor.tags, survivor.context, survivor.state
    if survivor.state != EnrichState.enriched and absorbed.state == EnrichState.enriched:
        keywords, tags, context, state = absorbed.keywords, absorbed.tags, absorbed.context, absorbed.state
    else:
        keywords = _union(keywords, absorbed.keywords, MAX_KEYWORDS)
        tags = _union(tags, absorbed.tags, MAX_TAGS)
    expiries = [survivor.expires_at, absorbed.expires_at]
    return survivor.model_copy(
        update={
            "keywords": keywords,
            "tags": tags,
            "context": context,
            "state": state,
            "pinned": survivor.pinned or absorbed.pinned,
            "expires_at": None if None in expiries else max(e for e in expiries if e is not None),
            "sources": [*survivor.sources, source_of(absorbed, not same_text), *absorbed.sources],
            "version": survivor.version + 1,
            "updated_at": now,
        }
    )


def _union(first: list[str], second: list[str], cap: int) -> list[str]:
    seen = {x.casefold(): x for x in reversed(second)}
    seen.update({x.casefold(): x for x in reversed(first)})
    out = list(dict.fromkeys(x.casefold() for x in [*first, *second]))
    return [seen[x] for x in out][:cap]
