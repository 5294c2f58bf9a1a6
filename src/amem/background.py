"""Enrichment after ``add`` has returned: the agent never waits for its memory's LLM.

``Memory.add(..., wait=False)`` (or ``enrich_in_background = true``) stores the note at once, pending,
with its content embedding: it is searchable before the call returns. One worker thread per memory then
enriches the pending notes of each scope that has some, oldest first (the order evolution needs), with the
same pipeline as ``amem enrich``.

The queue is the store: a pending note waits there, not in this process, so a crash or a shutdown loses
nothing (the next background run in that scope, or ``amem enrich``, finishes it). In memory the worker
keeps only the set of scopes with work, which bounds it by construction. ``close()`` lets the notes being
enriched finish and leaves the rest pending. With ``llm_concurrency`` > 1 that many workers run, each on
a different scope: one scope's notes stay in order, and a served model gets calls side by side.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from pydantic import BaseModel

from .notes import Scope

if TYPE_CHECKING:
    from .memory import Memory

log = logging.getLogger("amem.background")


class BackgroundStatus(BaseModel):
    """What the worker has done since this process started it."""

    running: bool = False  # a scope is being enriched now
    scopes_waiting: int = 0  # scopes with notes added since the worker last looked
    added: int = 0  # notes handed to the worker
    enriched: int = 0
    failed: int = 0
    still_pending: int = 0  # left pending by runs that stopped (provider unreachable, shutdown)
    last_error: str | None = None
    closed: bool = False


class Enricher:
    """The workers of one memory (shared by its scoped views): ``concurrency`` threads, each on a
    different scope at any time, so one scope's notes stay in order while scopes run side by side (a
    served model batches their calls)."""

    def __init__(self, memory: Memory, concurrency: int = 1) -> None:
        self._memory = memory
        self._concurrency = max(1, concurrency)
        self._cond = threading.Condition()
        self._scopes: dict[tuple[str | None, ...], Scope] = {}
        self._busy: set[tuple[str | None, ...]] = set()
        self._status = BackgroundStatus()
        self._stop = False
        self._threads: list[threading.Thread] = []

    def submit(self, scope: Scope) -> None:
        """A note of ``scope`` was stored pending: enrich it (and any other pending note there) soon."""
        with self._cond:
            if self._stop:
                raise RuntimeError("the memory is closed; its background enrichment has stopped")
            self._scopes[(scope.user_id, scope.agent_id, scope.run_id)] = scope
            self._status.added += 1
            if len(self._threads) < min(self._concurrency, len(self._scopes) + len(self._busy)):
                thread = threading.Thread(
                    target=self._run, name=f"amem-enrich-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._stop

    def status(self) -> BackgroundStatus:
        with self._cond:
            return self._status.model_copy(
                update={"scopes_waiting": len(self._scopes), "running": bool(self._busy)}
            )

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every note handed over has been tried; False when ``timeout`` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._scopes and not self._busy, timeout)

    def close(self) -> None:
        """Stop after the notes being enriched; what is left stays pending in the store."""
        with self._cond:
            self._stop = True
            self._status.closed = True
            self._cond.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()

    def _free(self) -> tuple[str | None, ...] | None:
        return next((k for k in self._scopes if k not in self._busy), None)

    def _run(self) -> None:
        from .pipeline import enrich_pending

        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or self._free() is not None)
                if self._stop:
                    return
                key = self._free()
                assert key is not None
                scope = self._scopes.pop(key)
                self._busy.add(key)
            try:
                view = self._memory.scoped(scope.user_id, scope.agent_id, scope.run_id)
                report = enrich_pending(view, None, False, None, stop=lambda: self._stop)
                error = report.stopped
            except Exception as exc:  # a worker must outlive one bad scope; its notes stay pending
                log.exception("background enrichment of %s failed", key)
                report, error = None, f"{type(exc).__name__}: {exc}"
            with self._cond:
                if report is not None:
                    self._status.enriched += report.enriched
                    self._status.failed += report.failed
                    self._status.still_pending += report.still_pending
                if error:
                    self._status.last_error = error
                self._busy.discard(key)
                self._cond.notify_all()


class Holder:
    """Shared by a memory and its scoped views: the worker, created on the first background add."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.enricher: Enricher | None = None

    def get(self, memory: Memory) -> Enricher:
        """The worker; a fresh one when the last was closed (a server that stopped, a memory used on)."""
        with self._lock:
            if self.enricher is None or self.enricher.closed:
                self.enricher = Enricher(memory, memory.settings.llm_concurrency)
            return self.enricher

    def close(self) -> None:
        with self._lock:
            enricher = self.enricher
        if enricher is not None:
            enricher.close()
