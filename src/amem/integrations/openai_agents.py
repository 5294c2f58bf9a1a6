"""amem as function tools for the OpenAI Agents SDK (``pip install "amem[openai-agents]"``).

``memory_tools(memory)`` gives an ``Agent`` three verbs over an ``AsyncMemory``: ``remember`` and
``recall`` always, ``forget`` only when asked for (deleting is for good, and a note's text, read back by
``recall``, could talk a model into it). The tools are bound to the memory's scope; for one agent serving
many users, pass a function of the run context instead (``lambda ctx: memory.scoped(user_id=...)``).

The SDK's tracing uploads every run to OpenAI unless it is turned off (``agents.set_tracing_disabled(True)``
or ``OPENAI_AGENTS_DISABLE_TRACING=1``); amem itself sends nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agents import FunctionTool, RunContextWrapper, default_tool_error_function, function_tool

from .. import present
from ..aio import AsyncMemory
from ..errors import InvalidInput, NotFound
from ..memory import Memory

log = logging.getLogger("amem.openai_agents")

#: A memory, or how to find the one of a run from its context (e.g. per user).
MemorySource = AsyncMemory | Memory | Callable[[RunContextWrapper[Any]], AsyncMemory | Memory]

#: The most notes one ``recall`` may ask for: a model asking for 1000 would flood its own context.
MAX_K = 20


def memory_tools(
    memory: MemorySource,
    *,
    k: int = 5,
    wait: bool | None = False,
    forget: bool = False,
    view: str | None = None,
) -> list[FunctionTool]:
    """``remember`` and ``recall`` (and ``forget`` when ``forget=True``) acting on ``memory``.

    ``wait=False`` (default): ``remember`` returns as soon as the note is stored and searchable; its
    keywords, links and evolution are written by amem's background worker, so the agent's turn never
    waits on the memory's own LLM calls. ``wait=True`` enriches before returning, ``None`` follows the
    memory's ``enrich_in_background`` setting. ``k``: the notes ``recall`` returns unless the model asks
    for another number (at most ``MAX_K``). ``view``: how a note is shown ("content" or "full"; default the
    memory's ``present_view``)."""
    resolve = _resolver(memory)
    default_k = max(1, min(k, MAX_K))

    async def remember(ctx: RunContextWrapper[Any], text: str) -> str:
        """Save one fact or event to long-term memory, so later conversations can recall it. Write it
        self-contained (who, what, when), one fact per call.

        Args:
            text: The fact or event, e.g. "Alice's favourite tea is sencha".
        """
        note = await resolve(ctx).add(text, wait=wait)
        return f"Saved as memory {note.id}."

    async def recall(ctx: RunContextWrapper[Any], query: str, k: int = default_k) -> str:
        """Search long-term memory: the notes most related to the query, plus notes linked to them.
        Call it before answering anything about the user or earlier conversations.

        Args:
            query: What to look for, in natural language.
            k: How many top notes to return (linked notes come extra).
        """
        mem = resolve(ctx)
        hits = await mem.search(query, max(1, min(k, MAX_K)))
        if not hits:
            return "No memories match."
        shown = view or mem.settings.present_view
        if not forget:
            return present.block(hits, shown)
        return "\n".join(f"(id {h.note.id}) {present.line(h.note, shown)}" for h in hits)

    async def forget_(ctx: RunContextWrapper[Any], note_id: str) -> str:
        """Delete one memory for good (with its links and history). Only when the user asks to forget
        something; the id is the one shown by recall.

        Args:
            note_id: The memory's id.
        """
        await resolve(ctx).delete(note_id)
        return f"Deleted memory {note_id}."

    tools = [_tool(remember, "remember"), _tool(recall, "recall")]
    if forget:
        tools.append(_tool(forget_, "forget"))
    return tools


def _tool(func: Callable[..., Any], name: str) -> FunctionTool:
    return function_tool(func, name_override=name, failure_error_function=_tool_error)


def _tool_error(ctx: RunContextWrapper[Any], error: Exception) -> str:
    """What the model sees when a tool fails: amem's advice for what it can fix (an empty query, an
    unknown id), the SDK's generic message for the rest (a store's error may name hosts or paths)."""
    if isinstance(error, InvalidInput | NotFound):
        return f"Memory error: {error}"
    log.warning("memory tool failed: %s", error)
    return default_tool_error_function(ctx, error)


def _resolver(source: MemorySource) -> Callable[[RunContextWrapper[Any]], AsyncMemory]:
    if not callable(source):
        fixed = AsyncMemory.of(source)
        return lambda ctx: fixed
    return lambda ctx: AsyncMemory.of(source(ctx))
