"""Background jobs: long ingestion, enrichment and consolidation run off the request, with an id and
progress; and ``Every``, which starts one on a schedule.

Jobs of one scope (a ``lane``) run one after another in the order they came: links and evolution depend on
what came before. A consolidation and its undo run alone (they merge and archive across what they cover,
and an undo must follow its run). Lanes run side by side on up to ``workers`` threads (the server passes
``llm_concurrency``: 1 for the local model, which serves one call at a time; more for a served model that
batches). Jobs live in this process only; a restarted server forgets
them, but every note a job stored is in the store.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..errors import AmemError
from ..notes import utcnow

log = logging.getLogger("amem.server")

Progress = Callable[[int, int], None]
KEEP_FINISHED = 200  # finished jobs remembered for their callers to read


class Job(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: str
    owner: str | None = None  # the user whose key started it; other keys see 404
    state: Literal["queued", "running", "done", "failed"] = "queued"
    done: int = 0
    total: int = 0
    result: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


@dataclass
class _Queued:
    job: Job
    lane: Hashable
    exclusive: bool
    run: Callable[[], None]


class Jobs:
    def __init__(self, workers: int = 1) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._workers = max(1, workers)
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="amem-job")
        self._waiting: list[_Queued] = []  # in arrival order
        self._running: list[_Queued] = []
        self._closed = False

    def submit(
        self,
        kind: str,
        owner: str | None,
        total: int,
        work: Callable[[Progress], dict[str, Any]],
        lane: Hashable = None,
        exclusive: bool = False,
    ) -> Job:
        """Queue ``work``. It starts once every earlier job of its ``lane`` (a scope) has ended; an
        ``exclusive`` job (one that reaches beyond a scope, like a consolidation) runs alone, after every
        job that came before it and before every job that comes after."""
        job = Job(kind=kind, owner=owner, total=total)

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        def run() -> None:
            job.state = "running"
            try:
                job.result = work(progress)
                job.state = "done"
            except AmemError as exc:
                job.error, job.state = str(exc), "failed"
            except Exception as exc:  # a job must always end in a state its caller can read
                job.error, job.state = f"{type(exc).__name__}: {exc}", "failed"
            if job.state == "failed":  # items are stored in order: the first `done` are in the store
                job.result = {"stored": job.done}
            job.finished_at = utcnow()

        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()
            self._waiting.append(_Queued(job, lane, exclusive, run))
            self._dispatch()
        return job

    def _dispatch(self) -> None:
        """Start every waiting job whose turn has come (called with the lock held)."""
        if self._closed:
            return
        blocked: set[Hashable] = {q.lane for q in self._running}
        alone = any(q.exclusive for q in self._running)
        for queued in list(self._waiting):
            if alone or len(self._running) >= self._workers:
                return
            if queued.exclusive:
                if self._running or queued is not self._waiting[0]:
                    return  # waits for everything before it, and holds back everything after it
            elif queued.lane in blocked:
                continue
            blocked.add(queued.lane)
            self._waiting.remove(queued)
            self._running.append(queued)
            alone = queued.exclusive
            self._pool.submit(self._run, queued)

    def _run(self, queued: _Queued) -> None:
        try:
            queued.run()
        finally:
            with self._lock:
                self._running.remove(queued)
                self._dispatch()

    def get(self, job_id: str, owner: str | None) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            return None
        return job.model_copy()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished_at is not None]
        for job in sorted(finished, key=lambda j: j.created_at)[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job.id]

    def close(self) -> None:
        """Waits for the running jobs; queued ones are dropped (their notes were never stored)."""
        with self._lock:
            self._closed = True
            self._waiting.clear()
        self._pool.shutdown(wait=True)


class Every:
    """Calls ``action`` every ``seconds`` on a daemon thread, the first time one interval after ``start``,
    until ``close``. An action that raises is logged and the schedule goes on."""

    def __init__(self, seconds: float, action: Callable[[], object], name: str = "amem-schedule") -> None:
        if not seconds > 0:
            raise ValueError(f"the interval must be above 0 seconds, not {seconds}")
        self.seconds = seconds
        self._action = action
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self._action()
            except Exception:  # a failed start must not end the schedule
                log.exception("scheduled %s failed", self._thread.name)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
