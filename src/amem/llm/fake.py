"""A deterministic LLM for tests: fills any JSON schema from the words of the prompt, or plays a script.

Scripted answers (strings, dicts, or exceptions to raise) are consumed in order; when the script is
empty the schema-filler answers. Every call is kept in ``calls`` for assertions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .base import Completion, Message, Usage

Script = str | dict[str, Any] | BaseException
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_STOP = {"that", "this", "with", "from", "have", "what", "when", "were", "they", "your", "about", "just"}


class FakeLLM:
    supports_schema = True

    def __init__(
        self,
        script: list[Script] | None = None,
        handler: Callable[[list[Message], dict[str, Any] | None], Script] | None = None,
        model_id: str = "fake:llm",
    ) -> None:
        self.model_id = model_id
        self.script: list[Script] = list(script or [])
        self.handler = handler
        self.calls: list[tuple[list[Message], dict[str, Any] | None]] = []

    def complete(
        self,
        messages: list[Message],
        schema: dict[str, Any] | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> Completion:
        self.calls.append((messages, schema))
        if self.script:
            answer: Script = self.script.pop(0)
        elif self.handler is not None:
            answer = self.handler(messages, schema)
        else:
            answer = schema_answer(messages[-1].content, schema)
        if isinstance(answer, BaseException):
            raise answer
        text = answer if isinstance(answer, str) else json.dumps(answer)
        prompt_tokens = sum(len(m.content.split()) for m in messages)
        return Completion(text=text, usage=Usage(prompt_tokens, len(text.split())), model=self.model_id)


def schema_answer(prompt: str, schema: dict[str, Any] | None) -> Any:
    """The fake model's answer to ``prompt``: ``schema`` filled from the note's words. Shared with the
    fault-injecting server (``amem.bench.flaky``), whose healthy answers must validate the same way."""
    answer = fill_schema(schema or {"type": "object"}, focus_text(prompt), schema)
    if isinstance(answer, dict) and isinstance(answer.get("notes"), list):
        # a batch: each entry describes its own note (T1, T2...), as a cooperative model would
        for entry in answer["notes"]:
            if isinstance(entry, dict) and isinstance(entry.get("note"), str):
                words = _words(_line_of(prompt, entry["note"]))
                entry["keywords"] = words[:3]
                entry["context"] = ("About " + " ".join(words[:8]) + ".")[:260]
    if isinstance(answer, dict) and isinstance(answer.get("updates"), list):
        # a cooperative model's update describes the neighbour it updates, with the new note's words
        for update in answer["updates"]:
            if isinstance(update, dict) and isinstance(update.get("note"), str):
                theirs = _words(_line_of(prompt, update["note"]))[:6]
                ours = [w for w in _words(focus_text(prompt)) if w not in theirs][:3]
                update["context"] = ("About " + " ".join(theirs + ours) + ".")[:260]
    return answer


def _line_of(prompt: str, alias: str) -> str:
    """The text of the prompt's line for ``alias`` (e.g. "N1 [date] content"), date left out."""
    for line in prompt.splitlines():
        if line.startswith(alias + " "):
            return re.sub(r"\[[^\]]*\]", " ", line[len(alias) :])
    return ""


def focus_text(prompt: str) -> str:
    """The part of the prompt after the last input marker: what the note (or question) says."""
    for marker in ("EPISODE:", "NEW NOTES:", "NEW NOTE", "CONTENT", "QUESTION:", "NOTE ["):
        pos = prompt.rfind(marker)
        if pos >= 0:
            rest = prompt[pos + len(marker) :]
            block = rest.split("RELATED NOTES")[0].split("NEIGHBOURS")[0].replace("Answer:", " ")
            return re.sub(r"\[[^\]]*\]", " ", block)
    return prompt


def _words(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for w in _WORD.findall(text):
        lw = w.lower()
        if lw not in _STOP:
            seen.setdefault(lw, None)
    return list(seen) or ["note"]


def fill_schema(node: dict[str, Any], text: str, root: dict[str, Any] | None, name: str = "") -> Any:
    if "$ref" in node and root is not None:
        ref = node["$ref"].split("/")[-1]
        node = root.get("$defs", {}).get(ref, {})
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    if "anyOf" in node:
        return fill_schema(node["anyOf"][0], text, root, name)
    if kind == "object":
        props = node.get("properties", {})
        return {k: fill_schema(v, text, root, k) for k, v in props.items()}
    if kind == "array":
        lo = int(node.get("minItems", 0))
        hi = int(node.get("maxItems", 3))
        item = node.get("items", {})
        if item.get("type") == "string" and "enum" not in item:
            words = _words(text)
            count = max(lo, min(hi, 3, len(words)))
            return words[:count] if name != "tags" else ["general", *words[:1]][: max(lo, 1)]
        if item.get("type") == "object" and lo > 1:
            # one entry per required item, each taking the next value of any enum (T1, T2, ...)
            out = []
            for i in range(lo):
                entry = fill_schema(item, text, root, name)
                for key, prop in item.get("properties", {}).items():
                    if "enum" in prop:
                        entry[key] = prop["enum"][i % len(prop["enum"])]
                out.append(entry)
            return out
        if "enum" in item and lo == 0:
            return []  # an optional pick among offered aliases (e.g. "supersedes") is left to scripts
        if "enum" in item or "$ref" in item or item.get("type") == "object":
            return [fill_schema(item, text, root, name) for _ in range(min(max(lo, 1), hi))] if hi else []
        return [fill_schema(item, text, root, name) for _ in range(lo)]
    if kind == "string":
        words = _words(text)
        limit = int(node.get("maxLength", 200))
        return ("About " + " ".join(words[:8]) + ".")[:limit]
    if kind == "boolean":
        return False
    if kind in ("integer", "number"):
        return node.get("minimum", 0)
    return None
