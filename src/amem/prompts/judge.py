"""Optional LLM judge for the benchmark: is a generated answer correct against the gold answer?

Used for categories 1-4 only (category 5 is scored as abstention without an LLM). The judge sees the
question, the gold answer and the candidate, never the retrieved context.
"""

from __future__ import annotations

from pydantic import BaseModel

from ..llm.base import Message
from ..llm.runner import Prompt

VERSION = "judge-v1"
STEP = "judge"

INSTRUCTIONS = """You grade answers to questions about a conversation. Compare the CANDIDATE answer with the GOLD answer.
Say "correct": true when the candidate states the same fact as the gold answer, even in other words, with more detail, or with a date in another format or a relative date that points to the same time. Say false when it is wrong, contradicts the gold answer, is missing, or says the information is not available.
Answer with one JSON object: {"correct": true} or {"correct": false}."""


class JudgeOutput(BaseModel):
    correct: bool


def render(question: str, gold: str, candidate: str) -> Prompt[JudgeOutput]:
    text = f"{INSTRUCTIONS}\n\nQUESTION: {question}\nGOLD: {gold}\nCANDIDATE: {candidate or '(no answer)'}\nAnswer:"
    schema = {"type": "object", "properties": {"correct": {"type": "boolean"}}, "required": ["correct"]}
    return Prompt(STEP, VERSION, [Message("user", text)], JudgeOutput, schema, max_tokens=16)
