"""`amem bench concurrency`: notes per second against a served model, by ``llm_concurrency``.

A local OpenAI-compatible server (``FlakyLLMServer`` with no faults) answers every call after a fixed
latency and serves requests side by side, as vLLM or SGLang do. For each concurrency level, a fresh SQLite
memory gets the same notes in several scopes with ``wait=False``; the background workers (one per level of
concurrency, each on a different scope, one scope's notes in order) enrich them all. Reported: wall time,
notes per second, and the ratio to the first level, measured in the same run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import Settings
from ..memory import Memory
from .flaky import FlakyLLMServer

TOPICS = ("garden", "kayak", "Lisbon flat", "violin lessons", "marathon", "bakery", "thesis", "puppy")


def notes_for(scope: int, count: int) -> list[str]:
    topic = TOPICS[scope % len(TOPICS)]
    return [f"User {scope}: day {i} of my {topic} story, and what happened next." for i in range(count)]


def run(
    settings: Settings, levels: Sequence[int], scopes: int, per_scope: int, latency: float
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with FlakyLLMServer(latency=latency) as server, tempfile.TemporaryDirectory() as tmp:
        for level in levels:
            config = replace(
                settings,
                database_url=f"sqlite:///{Path(tmp) / f'c{level}.db'}",
                llm="openai:served",
                llm_base_url=server.url,
                llm_api_key="bench",
                llm_cache=False,
                llm_concurrency=level,
            )
            memory = Memory(settings=config)
            try:
                memory.embedder.embed_documents(["warm up"])
                start = time.perf_counter()
                for scope in range(scopes):
                    memory.scoped(user_id=f"user-{scope}").add_many(
                        notes_for(scope, per_scope), batch_size=1, wait=False
                    )
                finished = memory.background.wait(timeout=3600)
                wall = time.perf_counter() - start
                done = sum(memory.scoped(user_id=f"user-{s}").count() for s in range(scopes))
                enriched = memory.background.status().enriched
            finally:
                memory.close()
            rows.append(
                {
                    "concurrency": level,
                    "notes": done,
                    "enriched": enriched,
                    "finished": finished,
                    "wall_s": round(wall, 2),
                    "notes_per_s": round(done / wall, 2),
                }
            )
    for row in rows:
        row["vs_first"] = round(row["notes_per_s"] / rows[0]["notes_per_s"], 2)
    return rows


def markdown(rows: Sequence[dict[str, Any]], latency: float) -> str:
    first = rows[0]["concurrency"]
    lines = [
        f"| llm_concurrency | notes | enriched | wall s | notes/s | vs concurrency {first} |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['notes']} | {r['enriched']} | {r['wall_s']} | {r['notes_per_s']} | "
            f"{r['vs_first']}x |"
        )
    lines.append(f"\nServed model: a local OpenAI-compatible server answering every call in {latency} s.")
    return "\n".join(lines)
