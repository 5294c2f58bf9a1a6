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
from .transfer import lines_of

BarFactory = Callable[[str, int], AbstractContextManager[Callable[[int, int], None]]]


def read_jsonl(path: Path) -> list[NoteInput]:
    """Every line checked before anything is added; errors name the line."""
    items = []
    try:
        lines = lines_of(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); nothing was added"
        ) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            item = NoteInput.model_validate(raw if isinstance(raw, dict) else {"content": raw})
        except (json.JSONDecodeError, ValueError) as exc:
            raise InvalidInput(f"{path}:{number}: {exc}; nothing was added") from None
        if not item.content.strip():
            raise InvalidInput(f"{path}:{number}: content is empty; nothing was added")
        items.append(item)
    return items


def ingest_jsonl(memory: Memory, path: Path, batch_size: int | None, bar: BarFactory) -> dict[str, Any]:
    items = read_jsonl(path)
    with bar("adding", len(items)) as progress:
        notes = memory.add_many(items, batch_size=batch_size, progress=progress)
    return _report(memory, notes)


def stored_sources(memory: Memory) -> set[tuple[str, str]]:
    """(sample id, dialogue id) of the turns already stored in this scope: what a rerun skips."""
    return {
        (str(meta.get("sample_id", "")), str(meta["dia_id"]))
        for n in memory.store.iter_notes(memory.scope)
        for meta in n.all_metadata()  # a turn folded into another note as its duplicate counts too
        if "dia_id" in meta
    }


def ingest_locomo(
    memory: Memory,
    path: Path,
    only: Sequence[str] = (),
    max_turns: int | None = None,
    batch_size: int | None = None,
    bar: BarFactory | None = None,
    max_sessions: int | None = None,
) -> dict[str, Any]:
    """One scope per conversation (user id = sample id unless the memory already has a user)."""
    conversations = [c for c in locomo.load(path) if not only or c.sample_id in only]
    missing = set(only) - {c.sample_id for c in conversations}
    if missing:
        raise InvalidInput(f"conversation(s) not found in {path}: {sorted(missing)}")
    added = []
    # served models: conversations side by side, each in order, by the background workers
    side_by_side = memory.llm_enabled and memory.settings.llm_concurrency > 1 and (batch_size or 1) == 1
    for conv in conversations:
        scoped = memory.scoped(
            user_id=memory.scope.user_id or conv.sample_id,
            agent_id=memory.scope.agent_id,
            run_id=memory.scope.run_id,
        )
        done = stored_sources(scoped)
        turns = locomo.truncate(conv, max_sessions, max_turns)[0].turns
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
            if (conv.sample_id, t.dia_id) not in done
        ]
        if not todo:
            continue
        if side_by_side:
            added.extend(scoped.add_many(todo, batch_size=1, wait=False))
        elif bar is None:
            added.extend(scoped.add_many(todo, batch_size=batch_size))
        else:
            with bar(f"{conv.sample_id}", len(todo)) as progress:
                added.extend(scoped.add_many(todo, batch_size=batch_size, progress=progress))
    if side_by_side and added:
        if bar is None:
            memory.background.wait()
        else:
            with bar("enriching", len(added)) as progress:
                while not memory.background.wait(timeout=1.0):
                    status = memory.background.status()
                    progress(status.enriched + status.failed, len(added))
        current = memory.store.get_notes([n.id for n in added])
        added = [current.get(n.id, n) for n in added]
    return _report(memory, added)


def _report(memory: Memory, notes: list[Any]) -> dict[str, Any]:
    states: dict[str, int] = {}
    for n in notes:
        states[n.state.value] = states.get(n.state.value, 0) + 1
    return {"added": len(notes), "states": states, "ids": [n.id for n in notes]}
