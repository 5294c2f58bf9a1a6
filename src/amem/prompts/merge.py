"""Consolidation step: are two very similar notes the same fact, a fact and its update, or different?

Asked only for pairs above ``merge_similarity`` cosine in one scope. The safe verdict is listed first
("different"): a model that copies the first option changes nothing, and embeddings alone never merge
two notes (two turns "I love it!" a month apart are similar and still different events).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, field_validator

from ..llm.base import Message
from ..llm.runner import Prompt
from ..notes import Note
from .common import clean_sentence, show_note

VERSION = "merge-v1"
STEP = "merge"

Verdict = Literal["different", "same", "updates"]

INSTRUCTIONS = """You keep an agent's long-term memory free of repetition. Compare the OLDER and the NEWER note and answer with one JSON object:
- "verdict": "same" when both state the same fact or event (one may have more words, but nothing the other lacks matters); "updates" when the newer note replaces the older one: the same subject with a changed value, a plan decided, a status changed, a correction; "different" otherwise (different events, different people, or a repeated remark on another occasion).
- "why": a short reason.

Example: OLDER [3 May 2023] Ana: I work at the bakery on Elm Street. NEWER [9 June 2023] Ana: I quit the bakery, I work at the library now.
Example answer: {"verdict": "updates", "why": "Ana changed jobs from the bakery to the library"}

Now the real notes."""


class MergeOutput(BaseModel):
    verdict: Verdict
    why: str = ""

    @field_validator("verdict", mode="before")
    @classmethod
    def _verdict(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("why", mode="before")
    @classmethod
    def _why(cls, v: object) -> str:
        return clean_sentence(v if isinstance(v, str) else "", 160)


def render(older: Note, newer: Note) -> Prompt[MergeOutput]:
    text = "\n".join(
        [INSTRUCTIONS, show_note("OLDER", older, 600), show_note("NEWER", newer, 600), "Answer:"]
    )
    schema = {
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": ["different", "same", "updates"]},
            "why": {"type": "string", "maxLength": 120},
        },
        "required": ["verdict", "why"],
    }
    return Prompt(STEP, VERSION, [Message("user", text)], MergeOutput, schema, max_tokens=60)
