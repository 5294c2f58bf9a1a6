"""Default write step: ONE call returns the note's attributes, its links and the neighbour updates.

The example uses aliases (R1, R2) from another namespace than the real input (N1, N2...), so a
small model that copies the example produces an alias that does not exist and gets dropped.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from ..llm.base import Message
from ..llm.runner import Prompt
from ..notes import Note, format_date
from .common import Attributes, Candidate, clean_sentence, clean_terms, clip, show_note, string_array

VERSION = "note-v6"
#: What only the example says: a stored field with one of these words, when the input has none, copied
#: the example (``steps/ground.prompt_leaks``).
EXAMPLE_WORDS = "Priya sister driving test sourdough bread baked Tom"
#: At most this many links per new note: small models otherwise link to every candidate.
MAX_LINKS = 3
#: At most this many neighbours rewritten per new note.
MAX_UPDATES = 2
STEP = "construct"
#: A new note replaces at most this many older facts.
MAX_SUPERSEDES = 1

INSTRUCTIONS = """You maintain an agent's long-term memory as small atomic notes.
Read the NEW NOTE (it comes last) and answer with one JSON object:
- "keywords": 3 to 6 salient nouns, verbs or concepts, in the new note's own words. No speaker names, no dates.
- "tags": 2 to 4 lower-case topics of the new note, as specific as the note allows.
- "context": one sentence about the new note only, using only what it says: who did or said what, and about which topic. Never describe a related note. Turn relative times ("yesterday", "last week", "next month") into dates using the new note's date.
- "links": the RELATED NOTES that share a specific person, event, object or plan with the new note, each with a reason naming that shared thing in a few words. Leave it empty when none is really related.
- "updates": for an UPDATABLE note that the new note changes, completes or contradicts (a plan decided, a problem solved, a fact that changed): its corrected one-sentence context and tags. Leave it empty otherwise.
- "supersedes": the UPDATABLE note whose fact the new note replaces, so that it is no longer true (a new job replaces the old one, a cancelled plan, a changed address). Usually empty: a note that only adds to another does not supersede it.

Example input:
RELATED NOTES:
R1 [2 March 2022 (Wednesday)] Priya: My sister keeps failing her driving test.
R2 [5 March 2022 (Saturday)] Tom: I baked sourdough bread this weekend.
UPDATABLE: R1
NEW NOTE [14 March 2022 (Monday)] Priya: My sister finally passed her driving test yesterday!
Example answer:
{"keywords": ["sister", "driving test", "passed"], "tags": ["driving test", "family"], "context": "Priya says her sister passed her driving test on 13 March 2022.", "links": [{"to": "R1", "why": "her sister's driving test"}], "updates": [{"note": "R1", "context": "Priya's sister kept failing her driving test until she passed it on 13 March 2022.", "tags": ["driving test"]}], "supersedes": []}

Now the real input."""


class LinkOut(BaseModel):
    to: str
    why: str = ""

    @field_validator("why", mode="before")
    @classmethod
    def _why(cls, v: Any) -> str:
        return clean_sentence(v if isinstance(v, str) else "", 160)


class UpdateOut(BaseModel):
    note: str
    context: str
    tags: list[str] = Field(default_factory=list)

    @field_validator("context", mode="before")
    @classmethod
    def _context(cls, v: Any) -> str:
        return clean_sentence(v, 300, max_sentences=2)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, v: Any) -> list[str]:
        return clean_terms(v or [], 6, 30, lower=True)


class NoteOutput(Attributes):
    """Validated answer. Unknown aliases, duplicates and empty updates are dropped, never applied."""

    links: list[LinkOut] = Field(default_factory=list)
    updates: list[UpdateOut] = Field(default_factory=list)
    supersedes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _aliases(self, info: ValidationInfo) -> NoteOutput:
        ctx = info.context or {}
        self.links = filter_links(self.links, set(ctx.get("link_aliases", ())))[:MAX_LINKS]
        allowed = set(ctx.get("update_aliases", ()))
        self.updates = filter_updates(self.updates, allowed)
        self.supersedes = filter_supersedes(self.supersedes, allowed)
        return self


def filter_supersedes(aliases: list[str], allowed: set[str]) -> list[str]:
    """At most one, and only a neighbour offered as UPDATABLE (close enough to be about the same thing)."""
    picked = [a.strip().upper() for a in aliases if isinstance(a, str) and a.strip().upper() in allowed]
    return picked[:MAX_SUPERSEDES]


def supersedes_schema(aliases: list[str]) -> dict[str, Any]:
    return {"type": "array", "maxItems": MAX_SUPERSEDES, "items": {"type": "string", "enum": aliases}}


def filter_links(links: list[LinkOut], allowed: set[str]) -> list[LinkOut]:
    seen: dict[str, LinkOut] = {}
    for link in links:
        alias = link.to.strip().upper()
        if alias in allowed and alias not in seen:
            seen[alias] = LinkOut(to=alias, why=link.why)
    return list(seen.values())


def filter_updates(updates: list[UpdateOut], allowed: set[str]) -> list[UpdateOut]:
    seen: dict[str, UpdateOut] = {}
    for update in updates:
        alias = update.note.strip().upper()
        if alias in allowed and alias not in seen and len(update.context) >= 8:
            seen[alias] = UpdateOut(note=alias, context=update.context, tags=update.tags)
    return list(seen.values())[:MAX_UPDATES]


def link_schema(aliases: list[str]) -> dict[str, Any]:
    return {
        "type": "array",
        "maxItems": len(aliases),
        "items": {
            "type": "object",
            "properties": {
                "to": {"type": "string", "enum": aliases},
                "why": {"type": "string", "maxLength": 120},
            },
            "required": ["to", "why"],
        },
    }


def update_schema(aliases: list[str], tags: bool = True, max_len: int = 260) -> dict[str, Any]:
    """``tags=False``: the neighbour keeps its tags (an episode's updates spend no tokens on them)."""
    properties: dict[str, Any] = {
        "note": {"type": "string", "enum": aliases},
        "context": {"type": "string", "minLength": 8, "maxLength": max_len},
    }
    if tags:
        properties["tags"] = string_array(4, 24)
    return {
        "type": "array",
        "maxItems": min(MAX_UPDATES, len(aliases)),
        "items": {"type": "object", "properties": properties, "required": list(properties)},
    }


def attribute_properties() -> dict[str, Any]:
    return {
        "keywords": string_array(6, 32, min_items=1),
        "tags": string_array(4, 24, min_items=1),
        "context": {"type": "string", "minLength": 8, "maxLength": 260},
    }


def render(new: Note, candidates: list[Candidate], updatable: list[str]) -> Prompt[NoteOutput]:
    lines = [INSTRUCTIONS]
    properties = attribute_properties()
    link_aliases = [c.alias for c in candidates]
    if candidates:
        lines.append("RELATED NOTES:")
        lines.extend(show_note(c.alias, c.note) for c in candidates)
        lines.append("UPDATABLE: " + (", ".join(updatable) if updatable else "none"))
        properties["links"] = link_schema(link_aliases)
        if updatable:
            properties["updates"] = update_schema(updatable)
            properties["supersedes"] = supersedes_schema(updatable)
    else:
        lines.append("RELATED NOTES: none")
    # the new note comes last, next to the answer: small models then describe it, not its neighbours
    lines.append(f"NEW NOTE [{format_date(new.event_time)}] {clip(new.content, 2000)}")
    lines.append("Answer:")
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return Prompt(
        step=STEP,
        version=VERSION,
        messages=[Message("user", "\n".join(lines))],
        output=NoteOutput,
        schema=schema,
        max_tokens=160 + 50 * min(MAX_LINKS, len(link_aliases)) + 90 * len(updatable),
        context={"link_aliases": link_aliases, "update_aliases": updatable},
    )
