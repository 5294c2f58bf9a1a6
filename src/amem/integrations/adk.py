"""amem as a Google ADK memory service (``pip install "amem[adk]"``).

``AmemMemoryService`` is a ``BaseMemoryService``: give it to ``Runner(memory_service=...)`` and ADK's own
memory tools (``load_memory``, ``PreloadMemoryTool``) search amem. ADK's scope maps onto amem's: the
user is amem's ``user_id``, the app its ``agent_id``; the session is not a scope (a new session must
recall the old one) but each note's metadata keeps it (``session_id``, ``event_id``, ``author``).
Notes are stored pending and enriched by amem's background worker, so adding a session never waits
for the LLM.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from google.adk.events.event import Event
from google.adk.memory.base_memory_service import BaseMemoryService, SearchMemoryResponse
from google.adk.memory.memory_entry import MemoryEntry
from google.adk.sessions.session import Session
from google.genai import types

from ..aio import AsyncMemory
from ..errors import NotFound
from ..inputs import said
from ..memory import Memory
from ..notes import Note, SearchHit
from ..store import Filters

try:  # the events a rewind left standing (ADK's own rule); older ADK has no rewinds
    from google.adk.events._rewind_events import get_active_events
except ImportError:  # pragma: no cover - depends on the installed ADK

    def get_active_events(events: list[Event]) -> list[Event]:
        return list(events)


SOURCE = "adk"


class AmemMemoryService(BaseMemoryService):
    """ADK's memory, kept in amem: searched by meaning and by keyword, linked and consolidated.

    ``memory``: an ``AsyncMemory`` or ``Memory`` (its scope is replaced by each call's app and user), or
    None for ``AsyncMemory()`` from the configuration (closed by ``aclose``). ``k``: memories per search.
    ``wait``: True makes every add wait for enrichment (scripts, tests); None follows the memory's
    ``enrich_in_background``; the default leaves it to the background worker.
    """

    def __init__(
        self, memory: AsyncMemory | Memory | None = None, *, k: int = 5, wait: bool | None = False
    ) -> None:
        self._owned = memory is None
        self.memory = AsyncMemory.of(memory)
        self.k, self.wait = k, wait

    def _scope(self, app_name: str, user_id: str) -> AsyncMemory:
        return self.memory.scoped(user_id=user_id, agent_id=app_name)

    async def add_session_to_memory(self, session: Session) -> None:
        """Stores the session's new text events; events stored before are skipped, and the notes of
        events a rewind took back are deleted (as ADK's other services do)."""
        mem = self._scope(session.app_name, session.user_id)
        live = get_active_events(list(session.events))
        live_ids = {e.id for e in live}
        rewound = {e.id for e in session.events if e.id and e.id not in live_ids}
        stored: set[str] = set()
        for note in await _session_notes(mem, session.id):
            ids = {str(m["event_id"]) for m in note.all_metadata() if "event_id" in m}
            if ids and ids <= rewound:
                await mem.delete(note.id)
            stored |= ids
        fresh = [e for e in live if not e.id or e.id not in stored]
        await self._add_events(mem, fresh, session.id, None)

    async def add_events_to_memory(
        self,
        *,
        app_name: str,
        user_id: str,
        events: Sequence[Event],
        session_id: str | None = None,
        custom_metadata: Mapping[str, object] | None = None,
    ) -> None:
        """Stores a delta of events (such as the last turn); ``custom_metadata`` joins each note's
        metadata. An event given twice makes no second note: amem folds an exact repeat into the note
        stored first (a write only when the metadata differs)."""
        mem = self._scope(app_name, user_id)
        await self._add_events(mem, list(events), session_id, custom_metadata)

    async def add_memory(
        self,
        *,
        app_name: str,
        user_id: str,
        memories: Sequence[MemoryEntry],
        custom_metadata: Mapping[str, object] | None = None,
    ) -> None:
        """Stores explicit memories, one note each (their author, timestamp and metadata kept)."""
        items = []
        for entry in memories:
            text = _text(entry.content)
            if not text:
                continue
            metadata = {**(custom_metadata or {}), **entry.custom_metadata, "source": SOURCE}
            if entry.author:
                metadata["author"] = entry.author
            item: dict[str, Any] = said(entry.author, text, metadata)
            if entry.timestamp:
                item["event_time"] = entry.timestamp
            items.append(item)
        if items:
            await self._scope(app_name, user_id).add_many(items, wait=self.wait)

    async def search_memory(self, *, app_name: str, user_id: str, query: str) -> SearchMemoryResponse:
        """amem's search (hybrid, plus linked notes) in the app and user's scope, best first."""
        if not query.strip():
            return SearchMemoryResponse()
        hits = await self._scope(app_name, user_id).search(query, self.k)
        return SearchMemoryResponse(memories=[_entry(hit) for hit in hits])

    async def delete_memory(self, *, app_name: str, user_id: str, memory_id: str | None = None) -> None:
        """Deletes the note (``MemoryEntry.id`` is its id) for good. Adding its session again stores the
        event again: use ``add_events_to_memory`` for new turns to avoid that."""
        if not memory_id:
            return
        with contextlib.suppress(NotFound):  # already gone, or another user's: nothing to delete here
            await self._scope(app_name, user_id).delete(memory_id)

    async def _add_events(
        self,
        mem: AsyncMemory,
        events: Iterable[Event],
        session_id: str | None,
        custom_metadata: Mapping[str, object] | None,
    ) -> None:
        items = []
        for event in events:
            text = _text(event.content)
            if not text or event.partial:
                continue  # tool calls, images, streamed fragments: nothing to remember as text
            metadata: dict[str, Any] = {**(custom_metadata or {}), "source": SOURCE}
            given = {"event_id": event.id, "author": event.author, "session_id": session_id}
            metadata |= {key: value for key, value in given.items() if value}
            when = datetime.fromtimestamp(event.timestamp, timezone.utc)
            items.append({**said(event.author, text, metadata), "event_time": when})
        if items:
            await mem.add_many(items, wait=self.wait)

    async def aclose(self) -> None:
        """Closes the memory if this service opened it (one given by the caller stays open)."""
        if self._owned:
            await self.memory.aclose()


async def _session_notes(mem: AsyncMemory, session_id: str) -> list[Note]:
    """Every note of the session in this scope, archived ones included (they were stored)."""
    return await mem.list_all(Filters(metadata={"session_id": session_id, "source": SOURCE}))


def _text(content: types.Content | None) -> str:
    """The words of a content: its text parts, the model's hidden thoughts left out."""
    if content is None or not content.parts:
        return ""
    return " ".join(p.text for p in content.parts if p.text and not p.thought).strip()


def _entry(hit: SearchHit) -> MemoryEntry:
    """A note as ADK's tools show it: the words (speaker prefix moved to ``author``), and when."""
    note = hit.note
    author = note.metadata.get("author")
    text = note.content
    if isinstance(author, str) and text.startswith(f"{author}: "):
        text = text[len(author) + 2 :]
    return MemoryEntry(
        id=note.id,
        content=types.Content(
            role="model" if author not in (None, "user") else "user", parts=[types.Part(text=text)]
        ),
        author=author if isinstance(author, str) else None,
        timestamp=note.event_time.isoformat(),
        custom_metadata={**note.metadata, "context": note.context, "why": hit.why.describe()},
    )
