"""Paper pipeline, call 2 (the reference's evolution decision), with aliases instead of list positions.

The reference answers with lists aligned to the neighbour order; a list of the wrong length is a
repair case here: the neighbour updates are dropped rather than applied to the wrong notes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from ..llm.base import Message
from ..llm.runner import Prompt
from ..notes import Note, format_date
from .common import Candidate, clean_sentence, clean_terms, clip, show_note, string_array

VERSION = "evolve-v1"
#: What only the example says: a stored field with one of these words, when the input has none, copied
#: the example (``steps/ground.prompt_leaks``).
EXAMPLE_WORDS = "Ana bakery Elm croissants"
STEP = "evolve"

INSTRUCTIONS = """You decide how an agent's memory should evolve when a new note arrives.
Given the NEW NOTE (with its keywords and context) and its NEIGHBOURS, answer with one JSON object:
- "should_evolve": true only if the new note changes how the neighbours should be understood or connected;
- "actions": any of "strengthen" (connect the new note to neighbours and refine its tags) and \
"update_neighbor" (rewrite neighbours' context and tags);
- "suggested_connections": aliases of the neighbours the new note should link to;
- "tags_to_update": the new note's tags after strengthening;
- "new_context_neighborhood": one context sentence per neighbour, in the order listed (repeat the old one to keep it);
- "new_tags_neighborhood": one tag list per neighbour, in the same order.

Example input:
NEW NOTE [9 July 2020 (Thursday)] Ana: The bakery on Elm Street closed for good. | keywords: bakery, closed | \
context: Ana reports the Elm Street bakery shut down.
NEIGHBOURS:
P1 [1 July 2020 (Wednesday)] Ana: I buy croissants at the Elm Street bakery every day. | context: Ana's \
daily routine includes the Elm Street bakery.
Example answer:
{"should_evolve": true, "actions": ["strengthen", "update_neighbor"], "suggested_connections": ["P1"], \
"tags_to_update": ["local business", "routine"], "new_context_neighborhood": ["Ana bought croissants daily at \
the Elm Street bakery until it closed in July 2020."], "new_tags_neighborhood": [["routine", "food"]]}

Now the real input."""


class EvolveOutput(BaseModel):
    should_evolve: bool = False
    actions: list[str] = Field(default_factory=list)
    suggested_connections: list[str] = Field(default_factory=list)
    tags_to_update: list[str] = Field(default_factory=list)
    new_context_neighborhood: list[str] = Field(default_factory=list)
    new_tags_neighborhood: list[list[str]] = Field(default_factory=list)

    @field_validator("actions", mode="before")
    @classmethod
    def _actions(cls, v: Any) -> list[str]:
        return [a for a in clean_terms(v or [], 2, 20, lower=True) if a in ("strengthen", "update_neighbor")]

    @field_validator("tags_to_update", mode="before")
    @classmethod
    def _tags(cls, v: Any) -> list[str]:
        return clean_terms(v or [], 6, 30, lower=True)

    @field_validator("new_context_neighborhood", mode="before")
    @classmethod
    def _contexts(cls, v: Any) -> list[str]:
        if not isinstance(v, list):
            raise ValueError("expected a list of sentences")
        return [clean_sentence(x, 300, max_sentences=2) if isinstance(x, str) else "" for x in v]

    @field_validator("new_tags_neighborhood", mode="before")
    @classmethod
    def _tag_lists(cls, v: Any) -> list[list[str]]:
        if not isinstance(v, list):
            raise ValueError("expected a list of tag lists")
        return [clean_terms(x, 6, 30, lower=True) if isinstance(x, list | str) else [] for x in v]

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> EvolveOutput:
        ctx = info.context or {}
        allowed = list(ctx.get("aliases", ()))
        self.suggested_connections = list(
            dict.fromkeys(
                a.strip().upper() for a in self.suggested_connections if a.strip().upper() in allowed
            )
        )
        n = len(allowed)
        if len(self.new_context_neighborhood) != n or len(self.new_tags_neighborhood) != n:
            # Misaligned lists cannot be mapped to neighbours safely: drop them (repair, not apply).
            self.new_context_neighborhood = []
            self.new_tags_neighborhood = []
        return self


def render(new: Note, candidates: list[Candidate]) -> Prompt[EvolveOutput]:
    aliases = [c.alias for c in candidates]
    head = f"NEW NOTE [{format_date(new.event_time)}] {clip(new.content, 2000)}"
    head += f" | keywords: {', '.join(new.keywords)} | context: {new.context}"
    lines = [
        INSTRUCTIONS,
        head,
        "NEIGHBOURS:",
        *(show_note(c.alias, c.note, with_context=True) for c in candidates),
        "Answer:",
    ]
    n = len(aliases)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "should_evolve": {"type": "boolean"},
            "actions": {
                "type": "array",
                "maxItems": 2,
                "items": {"type": "string", "enum": ["strengthen", "update_neighbor"]},
            },
            "suggested_connections": {
                "type": "array",
                "maxItems": n,
                "items": {"type": "string", "enum": aliases},
            },
            "tags_to_update": string_array(4, 24),
            "new_context_neighborhood": {
                "type": "array",
                "minItems": n,
                "maxItems": n,
                "items": {"type": "string", "maxLength": 260},
            },
            "new_tags_neighborhood": {
                "type": "array",
                "minItems": n,
                "maxItems": n,
                "items": string_array(4, 24),
            },
        },
        "required": [
            "should_evolve",
            "actions",
            "suggested_connections",
            "tags_to_update",
            "new_context_neighborhood",
            "new_tags_neighborhood",
        ],
    }
    return Prompt(
        STEP,
        VERSION,
        [Message("user", "\n".join(lines))],
        EvolveOutput,
        schema,
        max_tokens=120 + 110 * n,
        context={"aliases": aliases},
    )
