"""What an agent is shown of its memories: one line per note, as it goes into a prompt.

Two views: ``full`` (the note's date, its words and the LLM's one-line context) and ``content`` (date and
words only; the context has done its work in the indexes, finding the note). The benchmark scores recall
at equal tokens with exactly these lines (``amem bench locomo``, docs/design.md "Equal context tokens");
``content`` is the default: at equal tokens it is ahead of fusion over raw turns on both conversations
measured, ``full`` on neither (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterable

from .notes import Note, SearchHit, format_date

VIEWS = ("full", "content")


def line(note: Note, view: str = "full") -> str:
    text = f"[{format_date(note.event_time)}] {note.content}"
    if view == "full" and note.context:
        text += f" (context: {note.context})"
    return text


#: What a recalled block is introduced with when an adapter puts it into an agent's instructions.
MEMORY_HEADER = (
    "Memories from earlier conversations with this user (oldest facts may be outdated; "
    "use them when they help answer):"
)


def block(items: Iterable[Note | SearchHit], view: str = "full") -> str:
    """The notes (or hits) as prompt lines, in the order given."""
    if view not in VIEWS:
        raise ValueError(f"view {view!r}: choose one of {', '.join(VIEWS)}")
    return "\n".join(line(i.note if isinstance(i, SearchHit) else i, view) for i in items)
