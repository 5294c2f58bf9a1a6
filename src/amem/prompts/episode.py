"""Episode write step: ONE call for a run of consecutive turns (an episode). The call writes only what the
text cannot give: the episode's topic, which older notes it is about, and corrections of older notes.
Everything else is derived from the text (``steps/episode.py``): keywords, link reasons, and each turn's
context (who to whom, when, about what, relative times resolved from its date). The LLM's output tokens
are what a write costs on a CPU, and the small local model, asked for a context per turn, shifted them
onto the wrong turns and left relative times unresolved (docs/design.md, episode writes).

Turns are T1..Tn, older notes N1..Nm; the example uses other aliases (A1, R1) so a copied example
names nothing that exists.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from ..llm.base import Message
from ..llm.runner import Prompt
from ..notes import Note, format_date
from .common import Candidate, clean_sentence, clean_terms, clip, show_note
from .note import UpdateOut, filter_updates, update_schema

VERSION = "episode-v6"
#: What only the example says (``steps/ground.prompt_leaks``).
EXAMPLE_WORDS = "Priya sister driving test Tom car"
STEP = "construct_episode"
#: At most this many older notes an episode links to: small models otherwise pick every one shown.
MAX_RELATED = 3
#: At most this many older notes rewritten per episode.
MAX_UPDATES = 2

INSTRUCTIONS = """You maintain an agent's long-term memory. An EPISODE of a conversation follows: its turns T1, T2, ... in order, with their date. OLDER NOTES (N1, N2, ...) from the same memory come before it.
Answer with one JSON object:
- "topic": what the episode is about, in 2 to 4 of its own words;
- "related": the older notes (N...) about the same specific person, event, object or plan as the episode; only real matches, often none;
- "updates" (only when some older note is UPDATABLE): for an UPDATABLE note that the episode changes, completes or contradicts (a plan decided, a problem solved, a fact that changed), its corrected one-sentence context. Usually empty.

Example input:
OLDER NOTES:
R1 [2 March 2022 (Wednesday)] Priya: My sister keeps failing her driving test.
UPDATABLE: R1
EPISODE:
[14 March 2022 (Monday)]
A1 Priya: Hi Tom!
A2 Priya: My sister finally passed it yesterday!
A3 Tom: Great news! Is she buying a car now?
Example answer:
{"topic": "sister's driving test", "related": ["R1"], "updates": [{"note": "R1", "context": "Priya's sister kept failing her driving test until she passed it on 13 March 2022."}]}

Now the real input."""


class EpisodeOutput(BaseModel):
    """Unknown notes are dropped. An empty answer is valid (an episode with nothing to add)."""

    topic: str = ""
    related: list[str] = Field(default_factory=list)
    updates: list[UpdateOut] = Field(default_factory=list)

    @field_validator("topic", mode="before")
    @classmethod
    def _topic(cls, v: Any) -> str:
        text = clean_sentence(v if isinstance(v, str) else "", 60, max_sentences=1).rstrip(".")
        return text if len(text) <= 30 else text[:31].rsplit(" ", 1)[0]

    @field_validator("related", mode="before")
    @classmethod
    def _related(cls, v: Any) -> list[str]:
        return [a.upper() for a in clean_terms(v or [], 8, 8)]

    @model_validator(mode="after")
    def _aliases(self, info: ValidationInfo) -> EpisodeOutput:
        ctx = info.context or {}
        older = set(ctx.get("link_aliases", ()))
        self.related = [a for a in dict.fromkeys(self.related) if a in older][:MAX_RELATED]
        self.updates = filter_updates(self.updates, set(ctx.get("update_aliases", ())))[:MAX_UPDATES]
        return self


def turn_lines(turns: list[tuple[str, Note]]) -> list[str]:
    """The turns in order, each date said once (an episode's turns mostly share one)."""
    lines: list[str] = []
    shown = None
    for alias, note in turns:
        day = format_date(note.event_time)
        if day != shown:
            lines.append(f"[{day}]")
            shown = day
        lines.append(f"{alias} {clip(note.content, 1200)}")
    return lines


def render(
    turns: list[tuple[str, Note]], candidates: list[Candidate], updatable: list[str]
) -> Prompt[EpisodeOutput]:
    older = [c.alias for c in candidates]
    lines = [INSTRUCTIONS]
    if candidates:
        lines.append("OLDER NOTES:")
        lines.extend(show_note(c.alias, c.note, content_chars=200) for c in candidates)
        lines.append("UPDATABLE: " + (", ".join(updatable) if updatable else "none"))
    else:
        lines.append("OLDER NOTES: none")
    lines.append("EPISODE:")
    lines.extend(turn_lines(turns))
    lines.append("Answer:")
    properties: dict[str, Any] = {"topic": {"type": "string", "minLength": 3, "maxLength": 30}}
    if older:
        properties["related"] = {
            "type": "array",
            "maxItems": min(MAX_RELATED, len(older)),
            "items": {"type": "string", "enum": older},
        }
    if updatable:
        properties["updates"] = update_schema(updatable, tags=False, max_len=240)
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return Prompt(
        step=STEP,
        version=VERSION,
        messages=[Message("user", "\n".join(lines))],
        output=EpisodeOutput,
        schema=schema,
        max_tokens=40 + 6 * len(older) + 80 * min(MAX_UPDATES, len(updatable)),
        context={"link_aliases": older, "update_aliases": updatable},
    )
