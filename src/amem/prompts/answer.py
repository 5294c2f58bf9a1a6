"""Answer a question from retrieved memory notes (used by the benchmark; agents use their own prompts).

The abstention sentence is fixed so that questions about things never said (LoCoMo category 5) can
be scored without seeing the gold category.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, field_validator

from ..llm.base import Message
from ..llm.runner import Prompt
from .common import clean_sentence

VERSION = "answer-v1"
STEP = "answer"
ABSTAIN = "Not mentioned in the conversation."

INSTRUCTIONS = f"""You answer questions about a long conversation between {{speakers}}, using only the MEMORY below.
Each memory line starts with the date it was said. Answer with a few words: a name, a date, a number or a short phrase, without explanation.
For questions about when something happened, work it out from the dates (for example "last week" said on 15 May 2023 means the week before 15 May 2023) and answer with a date.
If the MEMORY does not contain the answer, reply exactly: {ABSTAIN}
Answer with one JSON object: {{{{"answer": "..."}}}}"""


class AnswerOutput(BaseModel):
    answer: str

    @field_validator("answer", mode="before")
    @classmethod
    def _answer(cls, v: Any) -> str:
        text = clean_sentence(v, 300, max_sentences=2)
        if not text:
            raise ValueError("give a short answer")
        return text


def render(speakers: str, memory_lines: list[str], question: str) -> Prompt[AnswerOutput]:
    body = "\n".join(memory_lines) if memory_lines else "(empty)"
    text = f"{INSTRUCTIONS.format(speakers=speakers)}\n\nMEMORY:\n{body}\n\nQUESTION: {question}\nAnswer:"
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "minLength": 1, "maxLength": 160}},
        "required": ["answer"],
    }
    return Prompt(STEP, VERSION, [Message("user", text)], AnswerOutput, schema, max_tokens=64)
