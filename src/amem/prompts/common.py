"""Shared pieces of the prompts: how notes are shown to the LLM and how its words are cleaned."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, field_validator

from ..notes import Note, format_date

_DEBRIS = " \t\r\n\"'`[]{}()<>#*•·,;:.!?"
_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class Attributes(BaseModel):
    """The note attributes every write step asks for; empty ones are an error, never a default."""

    keywords: list[str]
    tags: list[str]
    context: str

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
        return context_sentence(v)


def context_sentence(value: Any, max_sentences: int = 2) -> str:
    """A context as an LLM wrote it, cleaned; too short to say anything is an error, never a default."""
    text = clean_sentence(value, 300, max_sentences=max_sentences)
    if len(text) < 8:
        raise ValueError("write a one-sentence context")
    return text


@dataclass(frozen=True)
class Candidate:
    """A neighbour offered to the LLM under a short alias that maps back to its stable id."""

    alias: str
    note: Note
    similarity: float


def clip(text: str, limit: int) -> str:
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return (cut or text[:limit]) + "…"


def show_note(alias: str, note: Note, content_chars: int = 280, with_context: bool = False) -> str:
    """One line per neighbour. Their contexts are left out unless asked for: small models copy them
    into the new note's context, and the prompt stays shorter (faster on a CPU)."""
    line = f"{alias} [{format_date(note.event_time)}] {clip(note.content, content_chars)}"
    if with_context and note.context:
        line += f" | context: {clip(note.context, 200)}"
    return line


def clean_terms(values: Any, max_items: int, max_len: int = 40, lower: bool = False) -> list[str]:
    """Strip quote/bracket debris, drop empties and overlong items, de-duplicate case-insensitively."""
    if isinstance(values, str):
        values = re.split(r"[,;\n]", values)
    if not isinstance(values, list):
        raise ValueError("expected a list of strings")
    out: dict[str, str] = {}
    for value in values:
        if not isinstance(value, str):
            continue
        term = _SPACE.sub(" ", value).strip(_DEBRIS)
        if lower:
            term = term.lower()
        if not term or len(term) > max_len:
            continue
        out.setdefault(term.casefold(), term)
        if len(out) >= max_items:
            break
    return list(out.values())


def clean_sentence(value: Any, max_len: int, max_sentences: int = 2) -> str:
    """Collapse whitespace, drop repeated sentences (greedy decoding loops) and keep the first few."""
    if not isinstance(value, str):
        raise ValueError("expected a string")
    text = _SPACE.sub(" ", value).strip(" \t\r\n\"'`")
    kept: list[str] = []
    seen: set[str] = set()
    for sentence in _SENTENCE_END.split(text):
        key = sentence.casefold().strip(" .!?")
        if key and key not in seen:
            seen.add(key)
            kept.append(sentence)
        if len(kept) >= max_sentences:
            break
    text = " ".join(kept)
    return clip(text, max_len) if text else ""


def string_array(max_items: int, max_len: int, min_items: int = 0) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": max_len},
        "minItems": min_items,
        "maxItems": max_items,
    }
