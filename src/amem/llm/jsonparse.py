"""A tolerant JSON reader for models that wrap, fence or slightly break their JSON."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}
#: A lone UTF-16 surrogate (``"\\ud800"`` in JSON): no store can keep it as text, so it becomes U+FFFD.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``; raises ValueError with a short reason when there is none."""
    if not text or not text.strip():
        raise ValueError("empty answer")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    last_error = "no JSON object found"
    for candidate in candidates:
        span = _outer_object(candidate)
        if span is None:
            continue
        for attempt in (span, _repair(span)):
            try:
                value = json.loads(attempt, strict=False)  # raw newlines inside strings are common
                if isinstance(value, dict):
                    cleaned: dict[str, Any] = _valid_text(value)
                    return cleaned
            except json.JSONDecodeError as exc:
                last_error = f"invalid JSON: {exc.msg} at char {exc.pos}"
                continue
            except RecursionError:  # thousands of nested brackets: no answer of ours is that deep
                last_error = "JSON nested too deeply"
                continue
            last_error = "JSON is not an object"
    raise ValueError(last_error)


def _valid_text(value: Any) -> Any:
    """Every string (and key) with lone surrogates replaced, so whatever the answer carries can be stored."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_valid_text(v) for v in value]
    if isinstance(value, dict):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    return value


def _outer_object(text: str) -> str | None:
    """From the first '{' to its matching '}', honouring strings; None if it never closes."""
    start = text.find("{")
    if start < 0:
        return None
    depth = 0
    in_string = False
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def _repair(span: str) -> str:
    fixed = _TRAILING_COMMA.sub(r"\1", span)
    for py, js in _PY_LITERALS.items():
        fixed = re.sub(rf"(?<=[:\[,\s]){py}(?=[,\]}}\s])", js, fixed)
    return fixed
