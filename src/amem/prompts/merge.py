"""Consolidation step: are two very similar notes the same fact, a fact and its update, or different?

Asked only for pairs above ``merge_similarity`` cosine in one scope. The safe verdict is listed first
("different"): a model that copies the first option changes nothing, and embeddings alone never merge
two notes (two turns "Thanks, you're the best!" a month apart are similar and still two events).

"updates" must show its evidence: the fact of the older note that stopped being true and what replaced
it, each grounded in its own note. Measured on the LoCoMo dev split (merge-v1, no evidence asked for),
Qwen2.5-Coder 1.5B called 47 of 72 similar pairs "updates", nearly all of them repeated thanks and
greetings; an answer whose evidence is missing, ungrounded or unchanged now counts as "different".
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ValidationInfo, field_validator, model_validator

from ..llm.base import Message
from ..llm.runner import Prompt
from ..notes import Note
from ..text import word_stems as stems
from .common import clean_sentence, show_note

VERSION = "merge-v3"
#: What only the example says: a stored field with one of these words, when the input has none, copied
#: the example (``steps/ground.prompt_leaks``).
EXAMPLE_WORDS = "Ana Ben bakery Elm library"
STEP = "merge"

Verdict = Literal["different", "same", "updates"]

INSTRUCTIONS = """You keep an agent's long-term memory free of repetition. Compare the OLDER and the NEWER note and answer with one JSON object:
- "verdict": "same" when the newer note says again what the older one says: the same fact or event, or the same kind of remark (thanks, greetings, goodbyes, encouragement) repeated; "updates" when the newer note changes a specific fact of the older one (a different job, address, number, plan or status); "different" when they are about different things.
- "old_fact": for "updates", the fact from the OLDER note that is no longer true, in its words; else "".
- "new_fact": for "updates", what the NEWER note says instead, in its words; else "".
- "why": a short reason.

Examples:
OLDER [3 May 2023] Ana: I work at the bakery on Elm Street. NEWER [9 June 2023] Ana: I quit the bakery, I work at the library now.
{"verdict": "updates", "old_fact": "works at the bakery", "new_fact": "works at the library", "why": "Ana changed jobs"}
OLDER [3 May 2023] Ben: Thanks, Ana, you always cheer me up! NEWER [9 June 2023] Ben: Thanks Ana, you're the best at cheering me up.
{"verdict": "same", "old_fact": "", "new_fact": "", "why": "the same thanks said again"}
OLDER [3 May 2023] Ben: I adopted a grey cat. NEWER [9 June 2023] Ben: I adopted a grey dog.
{"verdict": "different", "old_fact": "", "new_fact": "", "why": "two different pets"}

Now the real notes."""


class MergeOutput(BaseModel):
    verdict: Verdict
    old_fact: str = ""
    new_fact: str = ""
    why: str = ""

    @field_validator("verdict", mode="before")
    @classmethod
    def _verdict(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("why", "old_fact", "new_fact", mode="before")
    @classmethod
    def _text(cls, v: object) -> str:
        return clean_sentence(v if isinstance(v, str) else "", 160)

    @model_validator(mode="after")
    def _evidence(self, info: ValidationInfo) -> MergeOutput:
        """ "updates" stands only with a changed fact found in each note; else it is "different"."""
        ctx = info.context or {}
        if self.verdict == "updates":
            old, new = stems(self.old_fact), stems(self.new_fact)
            grounded = old & ctx.get("older", set()) and new & ctx.get("newer", set())
            if not grounded or old == new:
                self.verdict = "different"
        return self


def render(older: Note, newer: Note) -> Prompt[MergeOutput]:
    text = "\n".join(
        [INSTRUCTIONS, show_note("OLDER", older, 600), show_note("NEWER", newer, 600), "Answer:"]
    )
    schema = {
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": ["different", "same", "updates"]},
            "old_fact": {"type": "string", "maxLength": 120},
            "new_fact": {"type": "string", "maxLength": 120},
            "why": {"type": "string", "maxLength": 120},
        },
        "required": ["verdict", "old_fact", "new_fact", "why"],
    }
    context = {"older": stems(older.content), "newer": stems(newer.content)}
    return Prompt(
        STEP, VERSION, [Message("user", text)], MergeOutput, schema, max_tokens=100, context=context
    )
