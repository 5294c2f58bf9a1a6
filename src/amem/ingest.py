"""Bulk ingestion from files, resumable: turns already stored (same source id) are skipped."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from . import locomo
from .errors import InvalidInput
from .memory import Memory, NoteInput

BarFactory = Callable[[str, int], AbstractContextManager[Callable[[int, int], None]]]


def read_jsonl(path: Path) -> list[NoteInput]:
    items = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                items.append(NoteInput.model_validate(raw if isinstance(raw, dict) else {"content": raw}))
            except (json.JSONDecodeError, ValueError) as exc:
                raise InvalidInput(f"{path}:{number}: {exc}; nothing was added") from exc
    return items


def ingest_jsonl(memory: Memory, path: Path, batch_size: int | None, bar: BarFactory) -> dict[str, Any]:
    items = read_jsonl(path)
    with bar("adding", len(items)) as progress:
        notes = memory.add_many(items, batch_size=batch_size, progress=progress)
    return _report(memory, notes)


def stored_sources(memory: Memory, key: str = "dia_id") -> set[str]:
    return {str(n.metadata[key]) for n in memory.store.iter_notes(memory.scope) if key in n.metadata}


def ingest_locomo(
    memory: Memory,
    path: Path,
    only: Sequence[str] = (),
    max_turns: int | None = None,
    batch_size: int | None = None,
    bar: BarFactory | None = None,
) -> dict[str, Any]:
    """One scope per conversation (user id = sample id unless the memory already has a user)."""
    conversations = [c for c in locomo.load(path) if not only or c.sample_id in only]
    if only and len(conversations) != len(set(only)):
        raise InvalidInput(f"conversation(s) not found in {path}: {sorted(set(only))}")
    added = []
    for conv in conversations:
        scoped = memory.scoped(
            user_id=memory.scope.user_id or conv.sample_id,
            agent_id=memory.scope.agent_id,
            run_id=memory.scope.run_id,
        )
        done = stored_sources(scoped)
        turns = conv.turns[:max_turns] if max_turns else conv.turns
        todo = [
            NoteInput(
                content=t.content(),
                event_time=t.event_time,
                metadata={
                    "dia_id": t.dia_id,
                    "speaker": t.speaker,
                    "session": t.session,
                    "sample_id": conv.sample_id,
                },
            )
            for t in turns
            if t.dia_id not in done
        ]
        if not todo:
            continue
        if bar is None:
            added.extend(scoped.add_many(todo, batch_size=batch_size))
        else:
            with bar(f"{conv.sample_id}", len(todo)) as progress:
                added.extend(scoped.add_many(todo, batch_size=batch_size, progress=progress))
    return _report(memory, added)


def _report(memory: Memory, notes: list[Any]) -> dict[str, Any]:
    states: dict[str, int] = {}
    for n in notes:
        states[n.state.value] = states.get(n.state.value, 0) + 1
    return {"added": len(notes), "states": states, "ids": [n.id for n in notes]}
