"""Batched write step for ``add_many``: several new notes share one call and one set of neighbours.

New notes are T1..Tn, stored neighbours N1..Nm; a new note may link to neighbours and to other new notes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from ..llm.base import Message
from ..llm.runner import Prompt
from ..notes import Note, format_date
from .common import Candidate, clean_sentence, clean_terms, clip, show_note
from .note import (
    LinkOut,
    UpdateOut,
    attribute_properties,
    filter_links,
    filter_supersedes,
    filter_updates,
    link_schema,
    supersedes_schema,
    update_schema,
)

VERSION = "batch-v6"
#: What only the example says: a stored field with one of these words, when the input has none, copied
#: the example (``steps/ground.prompt_leaks``).
EXAMPLE_WORDS = "Priya sister driving test Tom"
STEP = "construct_batch"

INSTRUCTIONS = """You maintain an agent's long-term memory as small atomic notes.
Several NEW NOTES (T1, T2, ...) arrive together; they come last. Answer with one JSON object {"notes": [...], "updates": [...]}.
"notes" has one entry per new note, in order, each with:
- "note": its alias (T1, T2, ...);
- "keywords": 3 to 6 salient nouns, verbs or concepts, in that note's own words. No speaker names, no dates;
- "tags": 2 to 4 lower-case topics of that note, as specific as it allows;
- "context": one sentence about that note only, using only what it says: who did or said what, and about which topic, with relative times turned into dates using the note's own date. Never describe another note;
- "links": RELATED NOTES (N...) or other new notes (T...) that share a specific person, event, object or plan with it, each with a reason naming that shared thing in a few words; often empty;
- "supersedes" (only when some related note is UPDATABLE): the UPDATABLE note whose fact this note replaces, so that it is no longer true (a new job, a cancelled plan, a changed address). Usually empty.
"updates": for an UPDATABLE related note (N...) that the new notes change, complete or contradict (a plan decided, a problem solved, a fact that changed): its corrected one-sentence context and tags. Leave it empty otherwise.

Example input:
RELATED NOTES:
R1 [2 March 2022 (Wednesday)] Priya: My sister keeps failing her driving test.
UPDATABLE: R1
NEW NOTES:
A1 [14 March 2022 (Monday)] Priya: My sister finally passed her driving test yesterday!
A2 [14 March 2022 (Monday)] Tom: Congratulations to her! Is she buying a car now?
Example answer:
{"notes": [{"note": "A1", "keywords": ["sister", "driving test", "passed"], "tags": ["driving test", "family"], "context": "Priya says her sister passed her driving test on 13 March 2022.", "links": [{"to": "R1", "why": "her sister's driving test"}], "supersedes": []}, {"note": "A2", "keywords": ["congratulations", "car"], "tags": ["car", "congratulations"], "context": "Tom congratulates Priya's sister and asks whether she will buy a car.", "links": [{"to": "A1", "why": "her passed test"}], "supersedes": []}], "updates": [{"note": "R1", "context": "Priya's sister kept failing her driving test until she passed it on 13 March 2022.", "tags": ["driving test"]}]}

Now the real input."""


class BatchNote(BaseModel):
    note: str
    keywords: list[str]
    tags: list[str]
    context: str
    links: list[LinkOut] = Field(default_factory=list)
    supersedes: list[str] = Field(default_factory=list)

    @field_validator("keywords", mode="before")
    @classmethod
    def _keywords(cls, v: Any) -> list[str]:
        return clean_terms(v, 8, 40)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, v: Any) -> list[str]:
        return clean_terms(v, 6, 30, lower=True)

    @field_validator("context", mode="before")
    @classmethod
    def _context(cls, v: Any) -> str:
        return clean_sentence(v, 300, max_sentences=2)

    def usable(self) -> bool:
        return bool(self.keywords and self.tags and len(self.context) >= 8)


class BatchOutput(BaseModel):
    """Entries for unknown or repeated T aliases, or with empty fields, are dropped; the caller
    handles each missing note on its own, so nothing is applied blindly or lost."""

    notes: list[BatchNote]
    updates: list[UpdateOut] = Field(default_factory=list)

    @model_validator(mode="after")
    def _aliases(self, info: ValidationInfo) -> BatchOutput:
        ctx = info.context or {}
        new_aliases = list(ctx.get("new_aliases", ()))
        link_aliases = set(ctx.get("link_aliases", ())) | set(new_aliases)
        kept: dict[str, BatchNote] = {}
        for entry in self.notes:
            alias = entry.note.strip().upper()
            if alias in new_aliases and alias not in kept and entry.usable():
                entry.note = alias
                entry.links = [link for link in filter_links(entry.links, link_aliases) if link.to != alias]
                entry.supersedes = filter_supersedes(entry.supersedes, set(ctx.get("update_aliases", ())))
                kept[alias] = entry
        if not kept and new_aliases:
            raise ValueError("give one entry per new note (T1, T2, ...)")
        self.notes = list(kept.values())
        self.updates = filter_updates(self.updates, set(ctx.get("update_aliases", ())))
        return self


def render(
    new: list[tuple[str, Note]], candidates: list[Candidate], updatable: list[str]
) -> Prompt[BatchOutput]:
    new_aliases = [alias for alias, _ in new]
    lines = [INSTRUCTIONS]
    link_aliases = [c.alias for c in candidates]
    if candidates:
        lines.append("RELATED NOTES:")
        lines.extend(show_note(c.alias, c.note) for c in candidates)
        lines.append("UPDATABLE: " + (", ".join(updatable) if updatable else "none"))
    else:
        lines.append("RELATED NOTES: none")
    lines.append("NEW NOTES:")
    lines.extend(f"{alias} [{format_date(n.event_time)}] {clip(n.content, 1200)}" for alias, n in new)
    lines.append("Answer:")
    item_props: dict[str, Any] = {"note": {"type": "string", "enum": new_aliases}, **attribute_properties()}
    item_props["links"] = link_schema(link_aliases + new_aliases)
    item_props["links"]["maxItems"] = min(4, len(link_aliases) + len(new_aliases))
    if updatable:
        item_props["supersedes"] = supersedes_schema(updatable)
    properties: dict[str, Any] = {
        "notes": {
            "type": "array",
            "minItems": len(new),
            "maxItems": len(new),
            "items": {"type": "object", "properties": item_props, "required": list(item_props)},
        }
    }
    if updatable:
        properties["updates"] = update_schema(updatable)
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return Prompt(
        step=STEP,
        version=VERSION,
        messages=[Message("user", "\n".join(lines))],
        output=BatchOutput,
        schema=schema,
        max_tokens=60 + 170 * len(new) + 90 * len(updatable),
        context={"new_aliases": new_aliases, "link_aliases": link_aliases, "update_aliases": updatable},
    )
