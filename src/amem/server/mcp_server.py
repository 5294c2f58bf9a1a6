"""`amem mcp`: the memory as MCP tools for agents (official MCP Python SDK), over stdio or streamable HTTP.

The tools are thin: each calls one ``Memory`` method and returns a compact view of the library's types
(an agent's context is precious, so hashes, model ids and ingest bookkeeping are left out). The scope is
the one the command was started with (``amem --user alice mcp``).
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from .. import present
from ..aio import AsyncMemory
from ..errors import AmemError
from ..memory import Memory
from ..notes import EnrichState, Note, NoteStatus, NoteVersion, SearchHit, VersionCause
from ..store import Filters

log = logging.getLogger("amem.mcp")

INSTRUCTIONS = """Long-term memory that organises itself (A-MEM). Save facts worth remembering with
`remember` (one self-contained fact or event per call, with when it happened if known); each memory gets
keywords, tags and a context, and is linked to related memories automatically. Before answering questions
about the past, call `search_memory`; it returns the most relevant memories plus linked ones, each with
why it was returned. Use `get_memory` to see one memory with its links, `memory_history` to see how it
changed, and `update_memory` / `delete_memory` to correct or forget. `export_memories` and
`import_memories` save and load a backup file in the server's transfer folder."""

#: tool -> (title, read-only, destructive, idempotent), sent as MCP tool annotations so a client can
#: run the readers without asking and confirm the rest. openWorldHint is false for every tool: they
#: touch only this memory's store and its transfer folder. remember is not "destructive" although
#: evolution may rewrite older memories' keywords, tags and context: content is never rewritten and
#: every earlier version stays in the history. A repeated remember or import changes nothing (dedupe,
#: skipped records); a repeated update writes another version, so it is not idempotent.
TOOL_HINTS: dict[str, tuple[str, bool, bool, bool]] = {
    "remember": ("Remember", False, False, True),
    "search_memory": ("Search memory", True, False, True),
    "get_memory": ("Get a memory", True, False, True),
    "update_memory": ("Update a memory", False, True, False),
    "delete_memory": ("Delete a memory", False, True, True),
    "memory_history": ("Memory history", True, False, True),
    "export_memories": ("Export memories", False, True, True),
    "import_memories": ("Import memories", False, False, True),
}


class MemoryView(BaseModel):
    id: str
    content: str
    context: str
    keywords: list[str]
    tags: list[str]
    event_time: datetime
    state: EnrichState = Field(
        description="enriched, or pending/failed when the LLM has not described it yet"
    )
    metadata: dict[str, Any]
    pinned: bool = Field(False, description="pinned memories are never archived by upkeep")
    status: NoteStatus = Field(
        NoteStatus.active, description="active; archived or merged ones are left out of searches"
    )

    @classmethod
    def of(cls, note: Note) -> MemoryView:
        return cls.model_validate(note.model_dump(include=set(cls.model_fields)))


class Hit(BaseModel):
    memory: MemoryView
    score: float = Field(description="cosine similarity to the query (higher is closer)")
    why: str = Field(description="why it was returned: its rank in dense/keyword search, or the link")
    linked_from: str | None = Field(None, description="id of the hit whose link brought this one in")


class SearchResults(BaseModel):
    hits: list[Hit]
    text: str = Field("", description="the memories as prompt lines, ready to paste into a prompt")


class LinkView(BaseModel):
    other_id: str
    direction: str = Field(description="'out' (this memory links to it) or 'in'")
    reason: str
    other_content: str


class MemoryWithLinks(BaseModel):
    memory: MemoryView
    links: list[LinkView]


class VersionView(BaseModel):
    version: int
    cause: VersionCause = Field(
        description="create, enrich, evolve (rewritten by a newer memory), update, or an upkeep change "
        "(duplicate, merge, supersede, archive, unarchive, pin, prune, restore)"
    )
    detail: str
    created_at: datetime
    llm_call_id: str | None
    context: str
    keywords: list[str]
    tags: list[str]


class History(BaseModel):
    versions: list[VersionView]


class Deleted(BaseModel):
    deleted: str


class Exported(BaseModel):
    file: str = Field(description="the file written, inside the transfer folder")
    records: int


class Imported(BaseModel):
    notes: int
    links: int
    versions: int
    skipped: int = Field(description="records already present (an import can be re-run)")


def _hit(hit: SearchHit) -> Hit:
    return Hit(
        memory=MemoryView.of(hit.note),
        score=round(hit.score, 4),
        why=hit.why.describe(),
        linked_from=hit.why.via_link_from,
    )


def _version(v: NoteVersion) -> VersionView:
    return VersionView.model_validate(v.model_dump(include=set(VersionView.model_fields)))


def build_server(memory: Memory) -> Any:
    """An MCPServer whose tools act on ``memory`` (and its scope). Export and import name files only
    inside ``settings.transfers_path``: the calling model never chooses a path on the machine."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations

    from .. import __version__
    from ..transfer import export_to, import_file

    folder = memory.settings.transfers_path
    amemory = AsyncMemory.wrap(memory)  # export and import stay blocking: the SDK runs them on a thread

    server = MCPServer("amem", instructions=INSTRUCTIONS, version=__version__)

    def guarded(fn: Any) -> Any:
        """Library errors reach the calling model as tool errors with their advice."""

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except AmemError as exc:
                raise ToolError(str(exc)) from exc

        return call

    def aguarded(fn: Any) -> Any:
        """``guarded`` for AsyncMemory's coroutines (the memory tools run on the server's loop)."""

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except AmemError as exc:
                raise ToolError(str(exc)) from exc

        return call

    def tool() -> Any:
        """``server.tool`` with the function's title and hints from ``TOOL_HINTS``."""

        def register(fn: Any) -> Any:
            title, read_only, destructive, idempotent = TOOL_HINTS[fn.__name__]
            hints = ToolAnnotations(
                title=title,
                read_only_hint=read_only,
                destructive_hint=destructive,
                idempotent_hint=idempotent,
                open_world_hint=False,
            )
            return server.tool(title=title, annotations=hints)(fn)

        return register

    @tool()
    async def remember(
        content: Annotated[str, Field(description="The fact or event, self-contained (who, what, when).")],
        event_time: Annotated[
            datetime | None, Field(description="When it happened (ISO 8601); default: now.")
        ] = None,
        metadata: Annotated[
            dict[str, str | int | float | bool] | None,
            Field(description='Optional labels, e.g. {"source": "chat"}; searchable as filters.'),
        ] = None,
        pinned: Annotated[
            bool, Field(description="Pin it: never archived by upkeep (for facts that must not fade).")
        ] = False,
    ) -> MemoryView:
        """Save one memory. It is described (keywords, tags, context), linked to related memories, and
        older related memories may be updated. Returns the stored memory with its id (an exact repeat
        returns the memory already saved)."""
        add = aguarded(amemory.add)
        note = await add(content, event_time=event_time, metadata=metadata or {}, pinned=pinned)
        return MemoryView.of(note)

    @tool()
    async def search_memory(
        query: Annotated[str, Field(description="What to look for, in natural language.")],
        k: Annotated[
            int, Field(ge=1, le=50, description="How many top memories (linked ones come extra).")
        ] = 5,
        after: Annotated[
            datetime | None, Field(description="Only memories that happened at/after this.")
        ] = None,
        before: Annotated[
            datetime | None, Field(description="Only memories that happened before this.")
        ] = None,
    ) -> SearchResults:
        """Find relevant memories: the top k by meaning and keywords, plus memories linked to them, each
        with why it was returned. Call this before answering anything about the past."""
        filters = guarded(Filters)(event_after=after, event_before=before) if after or before else None
        hits = await aguarded(amemory.search)(query, k, filters=filters)
        return SearchResults(
            hits=[_hit(h) for h in hits], text=present.block(hits, memory.settings.present_view)
        )

    @tool()
    async def get_memory(id: Annotated[str, Field(description="The memory's id.")]) -> MemoryWithLinks:
        """One memory with its links (and the linked memories' content)."""
        note = await aguarded(amemory.get)(id)
        views = [
            LinkView(other_id=n.note.id, direction=n.direction, reason=n.reason, other_content=n.note.content)
            for n in await aguarded(amemory.neighbours)(id)
        ]
        return MemoryWithLinks(memory=MemoryView.of(note), links=views)

    @tool()
    async def update_memory(
        id: Annotated[str, Field(description="The memory's id.")],
        content: Annotated[str | None, Field(description="New text; its description is rewritten.")] = None,
        context: Annotated[str | None, Field(description="New one-sentence context.")] = None,
        keywords: Annotated[list[str] | None, Field(description="New keywords.")] = None,
        tags: Annotated[list[str] | None, Field(description="New tags.")] = None,
    ) -> MemoryView:
        """Correct a memory. The previous version is kept in its history."""
        update = aguarded(amemory.update)
        note = await update(id, content=content, context=context, keywords=keywords, tags=tags)
        return MemoryView.of(note)

    @tool()
    async def delete_memory(id: Annotated[str, Field(description="The memory's id.")]) -> Deleted:
        """Forget a memory for good (with its links and history)."""
        await aguarded(amemory.delete)(id)
        return Deleted(deleted=id)

    @tool()
    async def memory_history(id: Annotated[str, Field(description="The memory's id.")]) -> History:
        """Every version of a memory, oldest first: how it was created, described, and rewritten when
        newer memories arrived (with the LLM call that did it)."""
        return History(versions=[_version(v) for v in await aguarded(amemory.history)(id)])

    @tool()
    def export_memories(
        file: Annotated[str, Field(description="File name inside the transfer folder, e.g. backup.jsonl.")],
    ) -> Exported:
        """Save every memory of this scope (with links and history) to a file in the server's transfer
        folder, as a backup or to move them to another memory. An existing file of that name is replaced."""
        path, records = guarded(export_to)(memory, file, folder)
        return Exported(file=path.relative_to(folder.resolve()).as_posix(), records=records)

    @tool()
    def import_memories(
        file: Annotated[str, Field(description="File name inside the transfer folder.")],
        move_here: Annotated[
            bool, Field(description="Copy memories saved by another user or agent into this scope.")
        ] = False,
    ) -> Imported:
        """Load memories saved by export_memories (all or nothing; memories already present are skipped)."""
        report = guarded(import_file)(memory, file, folder=folder, rescope=move_here, adopt_model=False)
        return Imported.model_validate(report.model_dump(include=set(Imported.model_fields)))

    return server


def run(memory: Memory, transport: str, host: str, port: int) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)  # stdout is the protocol channel
    server = build_server(memory)
    if transport == "stdio":
        server.run()
    else:
        print(f"amem MCP server on http://{host}:{port}/mcp; Ctrl-C stops", file=sys.stderr)
        server.run(transport="streamable-http", host=host, port=port)
