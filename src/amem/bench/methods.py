"""The methods `amem bench locomo` compares, and the stores they are ingested into.

Baselines (`bm25`, `dense`, `fusion`, `full_context`) share one store of raw turns (no LLM). Each amem
variant has its own store, named after the method, the LLM and the embedder, so a rerun resumes and
reuses its LLM cache. One scope per conversation: user id = the conversation's sample id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import Settings
from ..ingest import ingest_locomo
from ..memory import Memory

BarFactory = Callable[[str, int], AbstractContextManager[Callable[[int, int], None]]]


@dataclass(frozen=True)
class Method:
    name: str
    store: str  # which ingestion this method reads: "raw", "amem", "amem_paper", "amem_no_evolution"
    preset: str  # retrieval preset: keyword, paper (dense), hybrid, or "all" (full context)
    expand: bool  # follow links


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("bm25", "raw", "keyword", False),
        Method("dense", "raw", "paper", False),
        Method("fusion", "raw", "hybrid", False),
        Method("full_context", "raw", "all", False),
        Method("amem_paper", "amem_paper", "paper", True),
        Method("amem", "amem", "hybrid", True),
        Method("amem_no_links", "amem", "hybrid", False),
        Method("amem_no_evolution", "amem_no_evolution", "hybrid", True),
    )
}
BASELINES = ("bm25", "dense", "fusion", "full_context")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def store_path(out: Path, store: str, settings: Settings) -> Path:
    if store == "raw":
        return out / "stores" / f"raw__{slug(settings.embedder)}.db"
    return out / "stores" / f"{store}__{slug(settings.llm)}__{slug(settings.embedder)}.db"


def open_memory(out: Path, store: str, settings: Settings) -> Memory:
    """The memory a store name stands for, configured as that ingestion needs."""
    path = store_path(out, store, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    if store == "raw":
        return Memory(settings=replace(settings, database_url=f"sqlite:///{path}", llm="none"))
    pipeline = "paper" if store == "amem_paper" else "amem"
    # no evolution: no neighbour is ever close enough to be offered for an update
    evolve_floor = 2.0 if store == "amem_no_evolution" else 0.5
    run = replace(settings, database_url=f"sqlite:///{path}", pipeline=pipeline)
    return Memory(settings=run, evolve_floor=evolve_floor)


def ingest(
    out: Path,
    stores: Sequence[str],
    settings: Settings,
    data: Path,
    conversations: Sequence[str],
    max_turns: int | None,
    batch_size: int,
    bar: BarFactory | None = None,
    max_sessions: int | None = None,
) -> dict[str, int]:
    """Bring every store up to date (resumable: turns already stored are skipped)."""
    added: dict[str, int] = {}
    for store in stores:
        with open_memory(out, store, settings) as memory:
            report = ingest_locomo(memory, data, conversations, max_turns, batch_size, bar, max_sessions)
            added[store] = int(report["added"])
    return added
