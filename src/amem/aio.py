"""``AsyncMemory``: the whole ``Memory`` API as coroutines, for agent frameworks whose hooks are async.

What waits on the network is awaited natively: a remote embedder (``aembed_documents``/``aembed_query``,
httpx's async client) embeds queries and new notes without holding a thread. What is blocking by nature
runs on worker threads, never on the event loop: SQLite and PostgreSQL statements, the local ONNX and
llama.cpp models (CPU-bound), and enrichment, whose LLM calls are made from inside a synchronous pipeline.
Many agents awaiting one memory share one bounded pool of threads (``threads``), so a burst of searches
queues instead of starting a thread each.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio
import anyio.to_thread

from .config import Settings
from .embed.base import Embedder, Vectors
from .errors import ConfigError
from .memory import Memory, Progress
from .notes import EnrichReport, Link, LLMCall, Note, NoteInput, NoteVersion, SearchHit
from .steps.retrieve import search_options
from .store import Filters

if TYPE_CHECKING:
    from .audit import AuditReport
    from .background import BackgroundStatus
    from .consolidate import ConsolidationReport, UndoReport
    from .notes import Scope
    from .steps import graph
    from .steps.graph import Graph

T = TypeVar("T")

#: Worker threads the AsyncMemories over one store may use at once for quick blocking calls (twice as
#: many more for calls that may wait on the LLM).
DEFAULT_THREADS = 16


async def aembed_query(embedder: Embedder, text: str, run: Callable[..., Any]) -> Vectors:
    """The query vector: awaited over the network when the embedder can, else computed on a thread."""
    return await _embedded(embedder, "embed_query", text, run)


async def aembed_documents(embedder: Embedder, texts: list[str], run: Callable[..., Any]) -> Vectors:
    return await _embedded(embedder, "embed_documents", texts, run)


async def _embedded(embedder: Embedder, method: str, arg: Any, run: Callable[..., Any]) -> Vectors:
    native = getattr(embedder, f"a{method}", None)
    vectors: Vectors = await native(arg) if native is not None else await run(getattr(embedder, method), arg)
    return vectors


class AsyncMemory:
    """An A-MEM memory for async code. ``AsyncMemory(...)`` takes ``Memory``'s arguments;
    ``AsyncMemory.wrap(memory)`` shares an existing one (same store, models and background worker)."""

    def __init__(self, *args: Any, threads: int | None = None, **kwargs: Any) -> None:
        """Opens the store here, blocking (SQLite migrations, a PostgreSQL pool): inside a running
        loop, ``await AsyncMemory.open(...)`` opens it on a thread instead."""
        memory = Memory(*args, **kwargs)
        self._init(memory, _Threads.of(memory, threads))

    @classmethod
    async def open(cls, *args: Any, threads: int | None = None, **kwargs: Any) -> AsyncMemory:
        """``AsyncMemory(...)`` with the store opened on a worker thread, not on the event loop."""
        memory = await anyio.to_thread.run_sync(functools.partial(Memory, *args, **kwargs))
        return cls.wrap(memory, threads)

    @classmethod
    def wrap(cls, memory: Memory, threads: int | None = None) -> AsyncMemory:
        """``memory`` for async code. Every AsyncMemory over one store shares one bound on its worker
        threads (``threads``, first given wins; default 16 for quick calls, 32 for calls that may wait
        on the LLM), so wrapping a scoped view per request does not multiply the threads."""
        other = object.__new__(cls)
        other._init(memory, _Threads.of(memory, threads))
        return other

    @classmethod
    def of(cls, memory: AsyncMemory | Memory | None) -> AsyncMemory:
        """What an adapter was given, as an AsyncMemory: itself, a Memory wrapped, or (None) a new one
        from the configuration."""
        if memory is None:
            return cls()
        if isinstance(memory, AsyncMemory):
            return memory
        if isinstance(memory, Memory):
            return cls.wrap(memory)
        raise TypeError(f"expected an amem Memory or AsyncMemory, not {type(memory).__name__}")

    def _init(self, memory: Memory, threads: _Threads) -> None:
        self.sync = memory  # the blocking Memory underneath: same store, same models
        self._threads = threads

    async def _run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A quick blocking call (statements, local embedding) on a worker thread."""
        return await self._threads.run(functools.partial(func, *args, **kwargs), llm=False)

    async def _run_llm(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A call that may wait on the LLM (enrichment, consolidation), on threads of its own, so a burst
        of writes that enrich cannot take every thread from the searches."""
        return await self._threads.run(functools.partial(func, *args, **kwargs), llm=True)

    async def _embedder(self) -> Embedder:
        """The embedder, loaded on a thread the first time (a local model takes a moment to load)."""
        if self.sync._embedder is None:
            return await self._run(lambda: self.sync.embedder)
        return self.sync._embedder

    @property
    def scope(self) -> Scope:
        return self.sync.scope

    @property
    def settings(self) -> Settings:
        return self.sync.settings

    def scoped(
        self, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> AsyncMemory:
        """The same memory seen through another scope (shares the worker threads)."""
        other = object.__new__(type(self))
        other._init(self.sync.scoped(user_id, agent_id, run_id), self._threads)
        return other

    async def aclose(self) -> None:
        """Stops background enrichment after the note in hand (the rest stays pending), then the store
        and the embedder's async HTTP client."""
        await self._run(self.sync.close)
        closer = getattr(self.sync._embedder, "aclose", None)
        if closer is not None:
            await closer()

    async def __aenter__(self) -> AsyncMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- writing ---------------------------------------------------------------------------------
    async def add(
        self,
        content: str,
        *,
        event_time: datetime | str | None = None,
        metadata: dict[str, Any] | None = None,
        pinned: bool = False,
        expires_at: datetime | str | None = None,
        wait: bool | None = None,
    ) -> Note:
        """As ``Memory.add``. The note's embedding is awaited (natively for a remote embedder); the store
        and, with ``wait``, the enrichment run on worker threads."""
        mem = self.sync
        given = {"content": content, "event_time": event_time, "metadata": metadata or {}}
        item = mem._coerce({**given, "pinned": pinned, "expires_at": expires_at})  # bad input: first error
        embedder = await self._embedder()
        note = mem._new_note(item)
        if (folded := await self._run(mem._folded, note)) is not None:
            return folded  # an exact duplicate: nothing embedded, as in Memory.add
        vector = await aembed_documents(embedder, [note.embedding_text()], self._run)
        return await self._run_llm(mem._store_new, note, vector[0], wait)

    async def add_many(
        self,
        items: Iterable[NoteInput | str | dict[str, Any]],
        *,
        batch_size: int | None = None,
        progress: Progress | None = None,
        bulk: bool = True,
        wait: bool | None = None,
    ) -> list[Note]:
        items = list(items)
        return await self._run_llm(
            self.sync.add_many, items, batch_size=batch_size, progress=progress, bulk=bulk, wait=wait
        )

    async def check(self, items: Iterable[NoteInput | str | dict[str, Any]]) -> list[NoteInput]:
        return await self._run(self.sync.check, list(items))

    async def enrich(
        self, limit: int | None = None, include_failed: bool = False, progress: Progress | None = None
    ) -> EnrichReport:
        return await self._run_llm(self.sync.enrich, limit, include_failed, progress)

    def background_status(self) -> BackgroundStatus:
        """Queue and progress of notes added with ``wait=False`` (reads counters; never blocks)."""
        return self.sync.background.status()

    async def wait_background(self, timeout: float | None = None) -> bool:
        """Until the background worker has nothing left (True) or ``timeout`` seconds passed (False)."""
        return await self._run(self.sync.background.wait, timeout)

    # -- reading ---------------------------------------------------------------------------------
    async def search(
        self,
        query: str,
        k: int = 5,
        *,
        filters: Filters | None = None,
        preset: str | None = None,
        expand: bool = True,
        token_budget: int | None = 1200,
        include_archived: bool = False,
        track: bool = True,
    ) -> list[SearchHit]:
        """As ``Memory.search``: the query's embedding is awaited, the store's ranking runs on a thread."""
        mem = self.sync
        opts = search_options(mem.settings, query, k, preset, expand, token_budget, include_archived)
        # every preset needs the vector: keyword hits are scored against it too
        qvec = await aembed_query(await self._embedder(), query, self._run)
        return await self._run(mem._search_embedded, query, qvec, opts, filters, track)

    async def get(self, note_id: str) -> Note:
        return await self._run(self.sync.get, note_id)

    async def count(self, filters: Filters | None = None) -> int:
        return await self._run(self.sync.count, filters)

    async def links(self, note_id: str) -> list[Link]:
        return await self._run(self.sync.links, note_id)

    async def neighbours(self, note_id: str) -> list[graph.Neighbour]:
        return await self._run(self.sync.neighbours, note_id)

    async def history(self, note_id: str) -> list[NoteVersion]:
        return await self._run(self.sync.history, note_id)

    async def llm_calls(self, note_id: str | None = None) -> list[LLMCall]:
        return await self._run(self.sync.llm_calls, note_id)

    async def graph(self, limit: int = 2000, filters: Filters | None = None) -> Graph:
        return await self._run(self.sync.graph, limit, filters)

    async def audit(self, examples: int = 5) -> AuditReport:
        return await self._run(self.sync.audit, examples)

    async def stats(self) -> dict[str, Any]:
        return await self._run(self.sync.stats)

    # -- editing and upkeep ----------------------------------------------------------------------
    async def update(
        self,
        note_id: str,
        *,
        content: str | None = None,
        keywords: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        context: str | None = None,
        metadata: dict[str, Any] | None = None,
        event_time: datetime | None = None,
    ) -> Note:
        return await self._run(
            self.sync.update,
            note_id,
            content=content,
            keywords=keywords,
            tags=tags,
            context=context,
            metadata=metadata,
            event_time=event_time,
        )

    async def link(self, source_id: str, target_id: str, reason: str = "", weight: float = 1.0) -> Link:
        return await self._run(self.sync.link, source_id, target_id, reason, weight)

    async def delete(self, note_id: str) -> None:
        await self._run(self.sync.delete, note_id)

    async def delete_all(self, filters: Filters | None = None) -> int:
        return await self._run(self.sync.delete_all, filters)

    async def list_all(self, filters: Filters | None = None, page: int = 500) -> list[Note]:
        return await self._run(self.sync.list_all, filters, page)

    async def pin(self, note_id: str, pinned: bool = True) -> Note:
        return await self._run(self.sync.pin, note_id, pinned)

    async def archive(self, note_id: str) -> Note:
        return await self._run(self.sync.archive, note_id)

    async def unarchive(self, note_id: str) -> Note:
        return await self._run(self.sync.unarchive, note_id)

    async def restore(self, note_id: str, version: int) -> Note:
        return await self._run(self.sync.restore, note_id, version)

    async def consolidate(
        self,
        *,
        dry_run: bool = False,
        as_of: datetime | None = None,
        use_llm: bool = True,
        full: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> ConsolidationReport:
        return await self._run_llm(
            self.sync.consolidate, dry_run=dry_run, as_of=as_of, use_llm=use_llm, full=full, progress=progress
        )

    async def undo_consolidation(self, run_id: str, force: bool = False) -> UndoReport:
        return await self._run(self.sync.undo_consolidation, run_id, force)

    async def flush_usage(self) -> None:
        await self._run(self.sync.flush_usage)

    # last: inside the class body, ``list`` names this method from here on
    async def list(self, limit: int = 50, offset: int = 0, filters: Filters | None = None) -> list[Note]:
        return await self._run(self.sync.list, limit, offset, filters)


class _Threads:
    """The bound on the worker threads of the AsyncMemories over one store: one pair of capacity limiters
    per event loop (a limiter belongs to its loop; an agent may ``asyncio.run`` twice, or run loops in
    several threads, with one memory)."""

    _by_store: ClassVar[weakref.WeakKeyDictionary[Any, _Threads]] = weakref.WeakKeyDictionary()
    _guard = threading.Lock()

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ConfigError(f"threads must be at least 1, not {size}")
        self.size = size
        self._lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[Any, tuple[anyio.CapacityLimiter, ...]] = (
            weakref.WeakKeyDictionary()
        )
        self._no_loop: tuple[anyio.CapacityLimiter, ...] | None = None  # trio: one run at a time

    @classmethod
    def of(cls, memory: Memory, size: int | None) -> _Threads:
        if size is not None:
            return cls(size)
        store = memory._whole_store
        with cls._guard:
            try:
                found = cls._by_store.get(store)
                if found is None:
                    found = cls._by_store[store] = cls(DEFAULT_THREADS)
            except TypeError:  # a Store of the caller's own that cannot be a weak key: its own bound
                found = cls(DEFAULT_THREADS)
            return found

    def _limiters(self) -> tuple[anyio.CapacityLimiter, ...]:
        loop = _current_loop()
        with self._lock:
            found = self._loops.get(loop) if loop is not None else self._no_loop
            if found is None:
                found = (anyio.CapacityLimiter(self.size), anyio.CapacityLimiter(2 * self.size))
                if loop is None:
                    self._no_loop = found
                else:
                    self._loops[loop] = found
            return found

    async def run(self, func: Callable[[], T], llm: bool) -> T:
        quick, slow = self._limiters()
        return await anyio.to_thread.run_sync(func, limiter=slow if llm else quick)


def _current_loop() -> Any:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # trio
        return None
