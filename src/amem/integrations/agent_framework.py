"""amem as a Microsoft Agent Framework context provider (``pip install "amem[agent-framework]"``).

``AmemContextProvider`` plugs into ``Agent(..., context_providers=[...])``. Before each run it searches
amem with the user's new messages and adds the hits to the run's instructions (``present.block``, the
same lines the benchmark measures); after the run it stores the turn, one note per message, so the next
run (any session, any agent sharing the scope) can recall it. The agent never waits for enrichment: the
turn is stored pending (searchable at once) and the LLM enriches it in amem's background worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from agent_framework import AgentSession, ContextProvider, Message, SessionContext, SupportsAgentRun

from .. import present
from ..aio import AsyncMemory
from ..inputs import said
from ..memory import Memory

#: What the model is told above the recalled notes.
DEFAULT_HEADER = present.MEMORY_HEADER


class AmemContextProvider(ContextProvider):
    """Recalls memories into each run and remembers each turn.

    ``memory``: an ``AsyncMemory`` or ``Memory`` (shared, so its store and background worker serve the
    whole app), or None for ``AsyncMemory()`` from the configuration (closed by ``aclose``).
    ``user_id``/``agent_id``/``run_id``: the scope notes are searched in and written to; a field not
    given keeps the memory's own. A session id is not a scope (a new session must recall the
    old one's facts); it is kept in each note's metadata (``session_id``). ``view``: how recalled
    notes are shown ("content" or "full"; default the memory's ``present_view``).
    """

    DEFAULT_SOURCE_ID = "amem"

    def __init__(
        self,
        memory: AsyncMemory | Memory | None = None,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        source_id: str = DEFAULT_SOURCE_ID,
        k: int = 5,
        view: str | None = None,
        header: str = DEFAULT_HEADER,
        store_answers: bool = True,
        wait: bool | None = False,
    ) -> None:
        super().__init__(source_id)
        if view is not None and view not in present.VIEWS:
            raise ValueError(f"view {view!r}: choose one of {', '.join(present.VIEWS)}")
        self._owned = memory is None
        base = AsyncMemory.of(memory)
        own = base.scope  # a field not given keeps the memory's: agent_id alone never widens to all users
        self.memory = base.scoped(
            user_id=own.user_id if user_id is None else user_id,
            agent_id=own.agent_id if agent_id is None else agent_id,
            run_id=own.run_id if run_id is None else run_id,
        )
        self.k, self.header = k, header
        self.view: str = view or self.memory.settings.present_view
        self.store_answers = store_answers
        # False: the run never waits for enrichment; True: it does (scripts, tests); None: the setting
        self.wait = wait

    async def before_run(
        self,
        *,
        agent: SupportsAgentRun,
        session: AgentSession,
        context: SessionContext,
        state: dict[str, Any],
    ) -> None:
        """The user's new messages are the query; the hits become instructions of this run only."""
        query = "\n".join(m.text for m in context.input_messages if m.role == "user" and m.text.strip())
        if not query.strip():
            return
        hits = await self.memory.search(query, self.k)
        if hits:
            context.extend_instructions(self.source_id, f"{self.header}\n{present.block(hits, self.view)}")

    async def after_run(
        self,
        *,
        agent: SupportsAgentRun,
        session: AgentSession,
        context: SessionContext,
        state: dict[str, Any],
    ) -> None:
        """The turn as notes: the user's messages and (``store_answers``) the agent's text answers."""
        messages: list[Message] = [m for m in context.input_messages if m.role == "user"]
        if self.store_answers and context.response is not None:
            messages += [m for m in context.response.messages if m.role == "assistant"]
        items = list(_notes(messages, context.session_id))
        if items:
            await self.memory.add_many(items, wait=self.wait)

    async def aclose(self) -> None:
        """Closes the memory if this provider opened it (one given by the caller stays open)."""
        if self._owned:
            await self.memory.aclose()

    async def __aenter__(self) -> AmemContextProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _notes(messages: Sequence[Message], session_id: str | None) -> Iterable[dict[str, Any]]:
    """One note per message with text: "speaker: words" (as amem stores conversation turns), and who
    said it in metadata, so a filter can tell the user's words from the agent's."""
    for message in messages:
        text = message.text.strip()
        if not text:
            continue  # tool calls, images: nothing to remember as text
        speaker = message.author_name or message.role
        metadata: dict[str, Any] = {"source": "agent-framework", "role": message.role}
        optional = {"author": message.author_name, "session_id": session_id, "message_id": message.message_id}
        metadata |= {key: value for key, value in optional.items() if value}
        yield said(speaker, text, metadata)
