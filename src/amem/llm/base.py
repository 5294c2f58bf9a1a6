"""The LLM seam: one method, plain data in and out. Providers live in sibling modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class Completion:
    """What a provider returns. ``text`` is the raw answer; parsing and validation happen above."""

    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""


@runtime_checkable
class LLM(Protocol):
    """A chat model. ``schema`` is a JSON schema the answer must follow where the provider can enforce it.

    Providers raise ``LLMUnavailable`` for transport failures (after their own retries) and never
    return partial data silently.
    """

    model_id: str
    #: True when ``schema`` is enforced by the provider (constrained decoding / structured output).
    supports_schema: bool

    def complete(
        self,
        messages: list[Message],
        schema: dict[str, Any] | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> Completion: ...
