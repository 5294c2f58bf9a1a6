"""`amem bench background`: how long an agent waits for ``add`` while the LLM is busy enriching.

Turns of a LoCoMo conversation are added one after the other with ``wait=False`` into a fresh SQLite
memory whose background worker is enriching the earlier ones with the configured LLM, so every add after
the first runs while the LLM (and, for a local model, both cores) is busy. The baseline, in the same run:
the same adds into a memory with no LLM at all (store and embed only). Reported: p50/p95/max of the add
latency, and how many notes the worker finished meanwhile. The run stops the worker after the note in
hand; the notes left are pending in a throwaway store.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import locomo
from ..config import Settings
from ..memory import Memory
from . import metrics


def _adds(memory: Memory, turns: list[locomo.Turn], pause_s: float) -> list[float]:
    out: list[float] = []
    for turn in turns:
        start = time.perf_counter()
        memory.add(turn.content(), event_time=turn.event_time, wait=False)
        out.append((time.perf_counter() - start) * 1000)
        time.sleep(pause_s)  # an agent does something between two turns
    return out


def run(
    settings: Settings, data: Path, conversation: str | None, count: int, pause_s: float
) -> dict[str, Any]:
    turns = locomo.pick(data, conversation).turns[:count]
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, llm in (
            ("no LLM (store and embed only)", "none"),
            (f"worker busy ({settings.llm})", settings.llm),
        ):
            url = f"sqlite:///{Path(tmp) / (llm.replace(':', '_') + '.db')}"
            memory = Memory(
                settings=replace(settings, database_url=url, llm=llm, llm_cache=False), user_id="bench"
            )
            try:
                memory.embedder.embed_documents(["warm up"])  # load the embedder outside the clock
                if llm != "none":
                    memory.add(turns[0].content(), event_time=turns[0].event_time, wait=False)
                    time.sleep(1.0)  # the worker is now inside its first LLM call
                times = _adds(memory, turns[1:], pause_s)
                status = memory.background.status() if llm != "none" else None
            finally:
                memory.close()
            rows[name] = {
                "adds": len(times),
                "p50_ms": round(metrics.percentile(times, 0.5) or 0, 1),
                "p95_ms": round(metrics.percentile(times, 0.95) or 0, 1),
                "max_ms": round(max(times), 1),
                "enriched_meanwhile": status.enriched if status else None,
            }
    return rows


def markdown(rows: dict[str, Any]) -> str:
    lines = [
        "| memory | adds | add p50 ms | add p95 ms | max ms | enriched meanwhile |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        meanwhile = "–" if r["enriched_meanwhile"] is None else r["enriched_meanwhile"]
        lines.append(
            f"| {name} | {r['adds']} | {r['p50_ms']} | {r['p95_ms']} | {r['max_ms']} | {meanwhile} |"
        )
    return "\n".join(lines)
