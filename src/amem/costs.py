"""Cost figures from the recorded LLM calls: calls, tokens and seconds per note."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .notes import LLMCall


def summarise(calls: Sequence[LLMCall], notes: int | None = None) -> dict[str, Any]:
    """Totals by step; per-note figures when the number of notes written is given."""
    by_step: dict[str, dict[str, float]] = {}
    for call in calls:
        row = by_step.setdefault(
            call.step,
            {"calls": 0, "cached": 0, "failed": 0, "input_tokens": 0, "output_tokens": 0, "seconds": 0.0},
        )
        row["calls"] += 1
        row["cached"] += int(call.cached)
        row["failed"] += int(not call.ok)
        row["input_tokens"] += call.input_tokens
        row["output_tokens"] += call.output_tokens
        row["seconds"] += call.latency_ms / 1000
    total = {
        key: sum(row[key] for row in by_step.values())
        for key in ("calls", "cached", "failed", "input_tokens", "output_tokens", "seconds")
    }
    out: dict[str, Any] = {"total": total, "by_step": by_step}
    if notes:
        out["per_note"] = {key: round(value / notes, 3) for key, value in total.items()}
    return out
