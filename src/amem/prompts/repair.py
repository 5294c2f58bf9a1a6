"""Repair step: a note's context said things the note does not say; ask once more, for that field only.

A short call (one sentence out), made only when nothing of the first context survived the grounding
checks; if the repaired context fails too, the context is derived from the note without the LLM.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, field_validator

from ..llm.base import Message
from ..llm.runner import Prompt
from ..notes import Note, format_date
from .common import clip, context_sentence

VERSION = "repair-v2"
#: What only the example says: a stored field with one of these words, when the input has none, copied
#: the example (``steps/ground.prompt_leaks``).
EXAMPLE_WORDS = "Olu chess brother Lagos"
STEP = "repair"

INSTRUCTIONS = """Write the context of one note of an agent's memory: one sentence saying who said what, about which topic. Use only what the NOTE itself says and its date. Do not add places, people, events, numbers or feelings that the note does not state, and never use the AVOID words. Answer with one JSON object {"context": "..."}.
Example input:
AVOID: brother, Lagos
NOTE [9 July 2020 (Thursday)] Olu: We lost the chess final, but I played my best game.
Example answer:
{"context": "Olu says they lost the chess final on 9 July 2020 although he played his best game."}
Now the real input."""


class RepairOutput(BaseModel):
    context: str

    @field_validator("context", mode="before")
    @classmethod
    def _context(cls, v: Any) -> str:
        return context_sentence(v, max_sentences=1)


def render(note: Note, avoid: list[str]) -> Prompt[RepairOutput]:
    """The refused context is not shown (small models copy it back): only the words it should not use."""
    text = "\n".join(
        [
            INSTRUCTIONS,
            f"AVOID: {clip(', '.join(dict.fromkeys(avoid)) or 'nothing', 300)}",
            f"NOTE [{format_date(note.event_time)}] {clip(note.content, 2000)}",
            "Answer:",
        ]
    )
    schema = {
        "type": "object",
        "properties": {"context": {"type": "string", "minLength": 8, "maxLength": 260}},
        "required": ["context"],
    }
    return Prompt(STEP, VERSION, [Message("user", text)], RepairOutput, schema, max_tokens=90)
