"""Paper pipeline, call 1 (the reference's "analyze content"): keywords, context and tags of one note."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, field_validator

from ..llm.base import Message
from ..llm.runner import Prompt
from ..notes import Note, format_date
from .common import clean_sentence, clean_terms, clip
from .note import attribute_properties

VERSION = "analyse-v1"
STEP = "analyse"

INSTRUCTIONS = """Analyse one piece of an agent's memory and answer with one JSON object:
- "keywords": the 3 to 6 most salient nouns, verbs or concepts (no speaker names, no dates), most important first;
- "context": one sentence on the main topic, the key points and the purpose, with relative times \
("yesterday") turned into dates using the given date;
- "tags": 2 to 4 broad lower-case categories for classification.

Example input:
CONTENT [3 June 2021 (Thursday)] Leo: We adopted a rescue greyhound called Pixel last week.
Example answer:
{"keywords": ["rescue greyhound", "adoption", "Pixel"], "context": "Leo says his family adopted a rescue \
greyhound named Pixel in the week before 3 June 2021.", "tags": ["pets", "family"]}

Now the real input."""


class AnalyseOutput(BaseModel):
    keywords: list[str]
    context: str
    tags: list[str]

    @field_validator("keywords", mode="before")
    @classmethod
    def _keywords(cls, v: Any) -> list[str]:
        terms = clean_terms(v, 8, 40)
        if not terms:
            raise ValueError("give 3 to 6 keywords")
        return terms

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, v: Any) -> list[str]:
        terms = clean_terms(v, 6, 30, lower=True)
        if not terms:
            raise ValueError("give 2 to 4 tags")
        return terms

    @field_validator("context", mode="before")
    @classmethod
    def _context(cls, v: Any) -> str:
        text = clean_sentence(v, 300, max_sentences=2)
        if len(text) < 8:
            raise ValueError("write a one-sentence context")
        return text


def render(note: Note) -> Prompt[AnalyseOutput]:
    text = f"{INSTRUCTIONS}\nCONTENT [{format_date(note.event_time)}] {clip(note.content, 2000)}\nAnswer:"
    props = attribute_properties()
    schema = {"type": "object", "properties": props, "required": list(props)}
    return Prompt(STEP, VERSION, [Message("user", text)], AnalyseOutput, schema, max_tokens=160)
