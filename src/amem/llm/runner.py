"""Structured LLM calls: cache, one repair retry, validation, and a record of every call.

Every step goes through ``LLMRunner.run`` so cost per add and per query is always measurable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import AmemError, LLMError, LLMOutputError, LLMUnavailable
from ..notes import LLMCall
from .base import LLM, Completion, Message
from .jsonparse import parse_json_object

log = logging.getLogger("amem.llm")
T = TypeVar("T", bound=BaseModel)


@dataclass
class Prompt(Generic[T]):
    """A rendered prompt: the messages, the output model and the JSON schema sent to the provider."""

    step: str
    version: str
    messages: list[Message]
    output: type[T]
    schema: dict[str, Any]
    max_tokens: int = 400
    context: dict[str, Any] | None = None  # passed to pydantic validators (e.g. the offered aliases)


class CallFailed(LLMError):
    """The call was made and recorded but gave nothing usable; ``call`` says what happened."""

    def __init__(self, message: str, call: LLMCall, unreachable: bool = False) -> None:
        super().__init__(message)
        self.call = call
        #: the provider could not be reached (as opposed to answering badly): retrying now is pointless
        self.unreachable = unreachable


class LLMRunner:
    def __init__(
        self,
        llm: LLM,
        record: Callable[[LLMCall], None],
        cache_get: Callable[[str], str | None] | None = None,
        cache_put: Callable[[str, str], None] | None = None,
    ) -> None:
        self.llm = llm
        self._record = record
        self._cache_get = cache_get
        self._cache_put = cache_put

    def record(self, call: LLMCall) -> None:
        """Record ``call`` again (its record is replaced): the checks add what they refused from it."""
        self._record(call)

    def cache_key(self, prompt: Prompt[Any]) -> str:
        blob = json.dumps(
            {
                "model": self.llm.model_id,
                "messages": [[m.role, m.content] for m in prompt.messages],
                "schema": prompt.schema,
                "max_tokens": prompt.max_tokens,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def run(self, prompt: Prompt[T], note_ids: list[str]) -> tuple[T, LLMCall]:
        call = LLMCall(
            step=prompt.step, prompt_version=prompt.version, model=self.llm.model_id, note_ids=note_ids
        )
        key = self.cache_key(prompt)
        cached = self._cache_get(key) if self._cache_get else None
        if cached is not None:
            try:
                parsed = self._validate(prompt, cached)
                call.cached = True
                self._record(call)
                return parsed, call
            except (ValueError, ValidationError):
                log.warning("ignoring a cached answer that no longer validates for %s", prompt.step)

        start = time.perf_counter()
        messages = list(prompt.messages)
        error: str | None = None
        unreachable = False
        for attempt in (1, 2):
            call.attempts = attempt
            try:
                completion = self.llm.complete(messages, schema=prompt.schema, max_tokens=prompt.max_tokens)
            except AmemError as exc:
                error = f"{type(exc).__name__}: {exc}"
                unreachable = isinstance(exc, LLMUnavailable)
                break
            except Exception as exc:  # a provider bug must not lose the note: record and report it
                error = f"{type(exc).__name__}: {exc}"
                log.exception("LLM provider raised unexpectedly")
                break
            self._count(call, completion)
            try:
                parsed = self._validate(prompt, completion.text)
            except (ValueError, ValidationError) as exc:
                error = f"invalid output: {_short(exc)}"
                messages = [
                    *prompt.messages,
                    Message("assistant", completion.text[:2000]),
                    Message(
                        "user",
                        f"That answer was not usable ({_short(exc)}). Reply again with one JSON object "
                        "that follows the required format exactly, and nothing else.",
                    ),
                ]
                continue
            call.latency_ms = (time.perf_counter() - start) * 1000
            self._record(call)
            if self._cache_put is not None:
                self._cache_put(key, completion.text)
            return parsed, call
        call.latency_ms = (time.perf_counter() - start) * 1000
        call.ok = False
        call.error = error
        self._record(call)
        raise CallFailed(f"{prompt.step}: {error}", call, unreachable)

    @staticmethod
    def _count(call: LLMCall, completion: Completion) -> None:
        call.input_tokens += completion.usage.input_tokens
        call.output_tokens += completion.usage.output_tokens

    @staticmethod
    def _validate(prompt: Prompt[T], text: str) -> T:
        data = parse_json_object(text)
        return prompt.output.model_validate(data, context=prompt.context or {})


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg', '')}"[:200]
    return str(exc)[:200]


__all__ = ["CallFailed", "LLMOutputError", "LLMRunner", "Prompt"]
