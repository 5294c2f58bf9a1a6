"""amem as a long-term memory block for LlamaIndex (``pip install "amem[llama-index]"``).

``AmemMemoryBlock`` plugs into ``llama_index.core.memory.Memory`` (``memory_blocks=[...]``), the memory
every LlamaIndex agent and chat engine takes: LlamaIndex keeps the conversation's short-term queue, and
amem gets what that queue lets go of (``_aput``) and is searched with the latest messages on every read
(``_aget``), its hits going into the system message as prompt lines. There is deliberately no separate
``BaseMemory`` class: it would duplicate the short-term queue, token limits and chat store that
``Memory`` already owns. ``save_session`` stores what is still in the queue when a session ends, since
LlamaIndex hands messages to its blocks only when the queue overflows.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage, TextBlock
from llama_index.core.bridge.pydantic import Field, field_validator
from llama_index.core.memory import Memory as LlamaMemory
from llama_index.core.memory.memory import BaseMemoryBlock
from llama_index.core.storage.chat_store.sql import MessageStatus

from .. import present
from ..aio import AsyncMemory
from ..inputs import said
from ..memory import Memory

#: A rough characters-per-token figure, for ``atruncate`` (the block does not know Memory's tokenizer).
CHARS_PER_TOKEN = 4


class AmemMemoryBlock(BaseMemoryBlock[str]):
    """Long-term memory in amem, for ``Memory.from_defaults(memory_blocks=[AmemMemoryBlock(memory=...)])``.
    The block acts in the scope of the memory given (``memory.scoped(user_id=...)`` for one user)."""

    name: str = Field(default="long_term_memory", description="The block's tag in the system message.")
    memory: AsyncMemory = Field(description="The amem memory (a Memory is wrapped in AsyncMemory).")
    k: int = Field(default=5, ge=1, le=1000, description="Top notes per search (linked notes come extra).")
    token_budget: int | None = Field(default=1200, description="amem's search budget for the hits' text.")
    query_messages: int = Field(
        default=2, ge=1, description="How many of the latest user/assistant messages make the search query."
    )
    roles: tuple[str, ...] = Field(
        default=("user", "assistant"), description="Roles whose messages are searched with and stored."
    )
    view: str | None = Field(default=None, description="'content' or 'full'; default the memory's setting.")
    wait: bool | None = Field(
        default=False,
        description="False: store and return, enrichment in amem's background worker; True: enrich first.",
    )

    @field_validator("memory", mode="before")
    @classmethod
    def _as_async(cls, value: Any) -> Any:
        return AsyncMemory.wrap(value) if isinstance(value, Memory) else value

    async def _aget(self, messages: list[ChatMessage] | None = None, **block_kwargs: Any) -> str:
        texts = [text for m in messages or [] if (text := self._text(m))]
        query = "\n".join(texts[-self.query_messages :])
        if not query.strip():
            return ""
        hits = await self.memory.search(query, self.k, token_budget=self.token_budget)
        return present.block(hits, self.view or self.memory.settings.present_view)

    async def _aput(self, messages: list[ChatMessage]) -> None:
        """One note per message, as "role: text": an exact repeat (the same message saved twice) joins
        the note already stored."""
        items = []
        for message in messages:
            text = self._text(message)
            if text:
                metadata = {"role": _role(message)}
                session = message.additional_kwargs.get("session_id")
                if isinstance(session, str) and session:
                    metadata["session_id"] = session
                items.append(said(_role(message), text, metadata))
        if items:
            await self.memory.add_many(items, wait=self.wait)

    async def atruncate(self, content: str, tokens_to_truncate: int) -> str | None:
        """Drops the last lines (the weakest hits) until about enough tokens are gone."""
        lines = content.splitlines()
        cut = 0
        while lines and cut < tokens_to_truncate * CHARS_PER_TOKEN:
            cut += len(lines.pop()) + 1
        return "\n".join(lines) or None

    def _text(self, message: ChatMessage) -> str:
        """The message's text, when its role is one this block reads and stores."""
        if _role(message) not in self.roles:
            return ""
        return "\n".join(b.text for b in message.blocks if isinstance(b, TextBlock)).strip()


async def save_session(memory: LlamaMemory) -> None:
    """Hand the messages still in ``memory``'s short-term queue to its amem blocks, at a session's end.
    The queue is left as it is; saving it again adds no second note (amem folds exact repeats)."""
    messages = await memory.aget_all(status=MessageStatus.ACTIVE)
    for block in memory.memory_blocks:
        if isinstance(block, AmemMemoryBlock):
            await block.aput(messages, session_id=memory.session_id)


def _role(message: ChatMessage) -> str:
    return str(getattr(message.role, "value", message.role))
