"""Background jobs: long ingestion, enrichment and consolidation run off the request, with an id and
progress; and ``Every``, which starts one on a schedule.

One worker thread runs jobs in the order they came: writes into one memory are ordered anyway (links and
evolution depend on what came before), and the local LLM serves one call at a time. Jobs live in this
process only; a restarted server forgets them, but every note a job stored is in the store.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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


class Jobs:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amem-job")

    def submit(
        self, kind: str, owner: str | None, total: int, work: Callable[[Progress], dict[str, Any]]
    ) -> Job:
        job = Job(kind=kind, owner=owner, total=total)
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()

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

        self._pool.submit(run)
        return job

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
        self._pool.shutdown(wait=True, cancel_futures=True)


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
