"""`amem serve`: a REST API over ``amem.Memory`` (and the web page at ``/``).

Every route resolves the caller's scope, calls one Memory method and returns the library's own types.
With API keys configured, a key is bound to one user: it reads and writes only that user's notes, and a
note of another scope answers 404 exactly as a missing one does. Consolidation (and its undo) runs as a
background job in the caller's scope; ``consolidate_every_s`` also queues one for the server's whole
memory on a schedule, into the same job worker, so it never runs alongside a batch.
"""

# no `from __future__ import annotations`: FastAPI reads the local dependency aliases at definition time

import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import __version__, present
from ..aio import AsyncMemory
from ..audit import AuditReport
from ..errors import (
    AmemError,
    InvalidInput,
    NotFound,
)
from ..memory import Memory
from ..notes import (
    EnrichReport,
    EnrichState,
    Link,
    LLMCall,
    Note,
    NoteInput,
    NoteStatus,
    NoteVersion,
    utcnow,
)
from ..steps.graph import Graph
from ..store import Filters
from ..transfer import ImportReport, export_lines, import_lines, lines_of
from .auth import KeyRing
from .jobs import Every, Job, Jobs
from .limits import BodyLimit
from .mem0 import mount as mount_mem0
from .schemas import (
    AddMany,
    ConsolidateRequest,
    EnrichRequest,
    LinkRequest,
    NotePage,
    PinRequest,
    RestoreRequest,
    SearchRequest,
    SearchResult,
    UndoRequest,
    UpdateRequest,
)
from .status import status_of

log = logging.getLogger("amem.server")

MAX_BODY_BYTES = 16 * 1024 * 1024  # a batch of ~800 notes of the largest size; bigger batches: split


@dataclass(frozen=True)
class Caller:
    """Who is asking and which memory view serves them."""

    memory: Memory
    aio: AsyncMemory  # the same view for the async routes
    owner: str | None  # the key's user, None when the server has no keys


def _error(status: int, kind: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


def create_app(
    memory: Memory,
    keys: KeyRing | None = None,
    *,
    web: bool = True,
    trusted_hosts: Sequence[str] | None = None,
    consolidate_every_s: float = 0.0,
) -> FastAPI:
    """The app for one Memory. ``keys`` empty or None: no authentication (bind to 127.0.0.1 only).
    ``trusted_hosts``: the Host headers accepted (`amem serve` without keys: loopback names only, so a web
    page that rebinds its own name to 127.0.0.1 cannot reach the API). ``consolidate_every_s`` above 0:
    while the app runs, queue a consolidation of ``memory`` (its own scope: the whole memory for
    `amem serve`) every that many seconds, skipped while the previous one is still queued or running."""
    ring = keys or KeyRing({})
    amemory = AsyncMemory.wrap(memory)  # the async routes' view of the same memory
    jobs = Jobs(memory.settings.llm_concurrency)  # scopes side by side for a served model
    scheduled: list[Job] = []  # the last scheduled consolidation

    def consolidate_on_schedule() -> None:
        if scheduled and scheduled[-1].state in ("queued", "running"):
            return  # a slow run is not stacked up behind itself

        def work(_progress: Any) -> dict[str, Any]:
            report = memory.consolidate()
            log.info(
                "scheduled consolidation %s: %d changes in %.1f s",
                report.run_id,
                len(report.changes),
                report.seconds,
            )
            return report.model_dump(mode="json")

        scheduled[:] = [jobs.submit("consolidate", None, 0, work, exclusive=True)]

    schedule = Every(consolidate_every_s, consolidate_on_schedule) if consolidate_every_s > 0 else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if schedule is not None:
            schedule.start()
        yield
        if schedule is not None:
            schedule.close()
        jobs.close()  # waits for the running jobs; queued ones are dropped (their notes were never stored)
        memory.background.close()  # after the note in hand; notes added with wait=false stay pending

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,  # FastAPI's docs pages load their scripts from a CDN: no third-party calls
        redoc_url=None,
        title="amem",
        version=__version__,
        description="Agentic memory (A-MEM): notes that link and evolve. Errors are JSON: "
        '{"error": {"type", "message"}}.',
    )
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    if trusted_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(trusted_hosts))
    app.state.jobs = jobs
    app.state.scheduled = scheduled

    @app.exception_handler(AmemError)
    async def amem_error(_: Request, exc: AmemError) -> JSONResponse:
        status, kind = status_of(exc)
        return _error(status, kind, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return _error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        kind = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
        }
        return _error(exc.status_code, kind.get(exc.status_code, "error"), str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "internal", f"internal error ({type(exc).__name__}); see the server log")

    async def caller(
        request: Request,
        user_id: Annotated[str | None, Query(description="user scope (without API keys only)")] = None,
        agent_id: Annotated[str | None, Query()] = None,
        run_id: Annotated[str | None, Query()] = None,
    ) -> Caller:
        base = memory.scope
        if not ring:
            user = user_id if user_id is not None else base.user_id
            agent = agent_id if agent_id is not None else base.agent_id
            run = run_id if run_id is not None else base.run_id
            view = amemory.scoped(user, agent, run)
            return Caller(memory=view.sync, aio=view, owner=None)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        owner = ring.user_for(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if owner is None:
            raise HTTPException(
                401,
                "missing or unknown API key: send Authorization: Bearer KEY",
                {"WWW-Authenticate": "Bearer"},
            )
        if user_id is not None and user_id != owner:
            raise HTTPException(403, "this API key is bound to another user; leave user_id out")
        view = amemory.scoped(owner, agent_id, run_id)
        return Caller(memory=view.sync, aio=view, owner=owner)

    Who = Annotated[Caller, Depends(caller)]

    @app.get("/v1/health", tags=["meta"])
    def health() -> dict[str, Any]:
        """Liveness, without authentication; says nothing about the stored notes."""
        return {"status": "ok", "version": __version__, "auth": bool(ring)}

    @app.post("/v1/notes", status_code=201, response_model=Note, tags=["notes"])
    async def add(item: NoteInput, who: Who, response: Response, wait: bool | None = None) -> Note:
        """Store one note and enrich it (keywords, tags, context, links, evolution of neighbours). If the
        LLM fails the note is still stored, as ``pending``. ``wait=false`` (default: the server's
        ``enrich_in_background``) answers as soon as the note is stored, ``pending`` and searchable; a
        worker enriches it (poll the note's ``state``). ``pinned`` notes are never archived by
        consolidation; after ``expires_at`` the next consolidation archives the note. An exact duplicate
        of a note in the scope answers 200 with that note (this write's metadata joins its sources)."""
        started = utcnow()
        note = await who.aio.add(
            item.content,
            event_time=item.event_time,
            metadata=item.metadata,
            pinned=item.pinned,
            expires_at=item.expires_at,
            wait=wait,
        )
        if note.ingest_time < started:
            response.status_code = 200
        return note

    @app.post("/v1/notes/batch", status_code=202, response_model=Job, tags=["notes"])
    def add_many(body: AddMany, who: Who, response: Response) -> Job:
        """Queue many notes as a background job (in order); poll ``/v1/jobs/{id}`` for progress."""
        items = who.memory.check(body.items)  # a bad item refuses the whole batch, before anything is stored

        def work(progress: Any) -> dict[str, Any]:
            # bulk=False: a tenant's batch must not drop the index every tenant searches
            notes = who.memory.add_many(items, batch_size=body.batch_size, progress=progress, bulk=False)
            return {"note_ids": [n.id for n in notes]}

        job = jobs.submit("add_many", who.owner, len(items), work, lane=who.memory.scope)
        response.headers["Location"] = f"/v1/jobs/{job.id}"
        return job

    @app.get("/v1/jobs/{job_id}", response_model=Job, tags=["jobs"])
    def job(job_id: str, who: Who) -> Job:
        found = jobs.get(job_id, who.owner)
        if found is None:
            raise NotFound(f"no job {job_id!r} for this caller")
        return found

    @app.get("/v1/notes", response_model=NotePage, tags=["notes"])
    async def list_notes(
        who: Who,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
        state: EnrichState | None = None,
        status: NoteStatus | None = None,
    ) -> NotePage:
        """Newest first; every status (active, archived, merged) unless ``status`` says which."""
        filters = (
            Filters(states=[state] if state else None, statuses=[status] if status else None)
            if state or status
            else None
        )
        notes = await who.aio.list(limit=limit, offset=offset, filters=filters)
        return NotePage(notes=notes, total=await who.aio.count(filters), limit=limit, offset=offset)

    @app.get("/v1/notes/{note_id}", response_model=Note, tags=["notes"])
    async def get(note_id: str, who: Who) -> Note:
        return await who.aio.get(note_id)

    @app.patch("/v1/notes/{note_id}", response_model=Note, tags=["notes"])
    async def update(note_id: str, body: UpdateRequest, who: Who) -> Note:
        """Edit by hand; the previous version stays in the history."""
        return await who.aio.update(note_id, **body.model_dump(exclude_unset=True))

    @app.delete("/v1/notes/{note_id}", status_code=204, tags=["notes"])
    async def delete(note_id: str, who: Who) -> Response:
        await who.aio.delete(note_id)
        return Response(status_code=204)

    @app.get("/v1/notes/{note_id}/links", response_model=list[Link], tags=["notes"])
    async def links(note_id: str, who: Who) -> list[Link]:
        return await who.aio.links(note_id)

    @app.get("/v1/notes/{note_id}/history", response_model=list[NoteVersion], tags=["notes"])
    async def history(note_id: str, who: Who) -> list[NoteVersion]:
        """Every version, oldest first, with its cause and the LLM call that made it."""
        return await who.aio.history(note_id)

    @app.get("/v1/notes/{note_id}/calls", response_model=list[LLMCall], tags=["notes"])
    async def calls(note_id: str, who: Who) -> list[LLMCall]:
        """The LLM calls that wrote this note (step, prompt version, model, tokens, latency)."""
        return await who.aio.llm_calls(note_id)

    @app.post("/v1/notes/{note_id}/pin", response_model=Note, tags=["upkeep"])
    async def pin(note_id: str, who: Who, body: PinRequest | None = None) -> Note:
        """Pin (or with ``{"pinned": false}`` unpin) a note: consolidation never archives a pinned note.
        Without a body, pins."""
        return await who.aio.pin(note_id, body.pinned if body is not None else True)

    @app.post("/v1/notes/{note_id}/archive", response_model=Note, tags=["upkeep"])
    async def archive(note_id: str, who: Who) -> Note:
        """Take a note out of search; it stays readable and ``/unarchive`` brings it back (a pinned note
        must be unpinned first)."""
        return await who.aio.archive(note_id)

    @app.post("/v1/notes/{note_id}/unarchive", response_model=Note, tags=["upkeep"])
    async def unarchive(note_id: str, who: Who) -> Note:
        return await who.aio.unarchive(note_id)

    @app.post("/v1/notes/{note_id}/restore", response_model=Note, tags=["upkeep"])
    async def restore(note_id: str, body: RestoreRequest, who: Who) -> Note:
        """Put the note back as it was at ``version`` (text, attributes, status, outgoing links), written
        as a new version."""
        return await who.aio.restore(note_id, body.version)

    @app.post("/v1/links", status_code=201, response_model=Link, tags=["upkeep"])
    async def link(body: LinkRequest, who: Who) -> Link:
        """Link two notes of the caller's scope by hand (a version of the source records it)."""
        return await who.aio.link(body.source_id, body.target_id, body.reason, body.weight)

    @app.post("/v1/consolidate", status_code=202, response_model=Job, tags=["upkeep"])
    def consolidate(who: Who, response: Response, body: ConsolidateRequest | None = None) -> Job:
        """Consolidate the caller's scope as a background job: merge duplicates, mark superseded facts,
        prune decayed links, archive forgotten or expired notes. The job's result is the report (its
        ``run_id`` undoes the run; ``changes`` lists what changed or, with ``dry_run``, would). Without a
        body: a real run, now, with the LLM, over what changed since the last run."""
        req = body or ConsolidateRequest()

        def work(_progress: Any) -> dict[str, Any]:
            report = who.memory.consolidate(
                dry_run=req.dry_run, as_of=req.as_of, use_llm=req.use_llm, full=req.full
            )
            return report.model_dump(mode="json")

        job = jobs.submit("consolidate", who.owner, 0, work, exclusive=True)
        response.headers["Location"] = f"/v1/jobs/{job.id}"
        return job

    @app.post("/v1/consolidate/undo", status_code=202, response_model=Job, tags=["upkeep"])
    def undo_consolidation(body: UndoRequest, who: Who, response: Response) -> Job:
        """Undo a consolidation run as a background job, queued behind any consolidation still running
        so writes keep their order. The job's result is the undo report: ``restored`` note ids, and
        ``skipped`` ones changed after the run (``force`` restores those too). A run that changed nothing
        in the caller's scope, or that changed notes outside it, is 404 at once."""
        _check_run(who.memory, body.run_id)

        def work(_progress: Any) -> dict[str, Any]:
            return who.memory.undo_consolidation(body.run_id, body.force).model_dump(mode="json")

        job = jobs.submit("undo_consolidation", who.owner, 0, work, exclusive=True)
        response.headers["Location"] = f"/v1/jobs/{job.id}"
        return job

    @app.post("/v1/search", response_model=SearchResult, tags=["search"])
    async def search(body: SearchRequest, who: Who) -> SearchResult:
        """Top-k notes plus linked neighbours within the token budget, each with why it was returned."""
        hits = await who.aio.search(
            body.query,
            body.k,
            filters=body.filters.filters() if body.filters else None,
            preset=body.preset,
            expand=body.expand,
            token_budget=body.token_budget,
            include_archived=body.include_archived,
        )
        if who.owner is not None:
            # BM25 scores carry document frequencies counted over every user's notes: with keys, only
            # the rank is shown, so no tenant learns how common a term is in another's memory
            hits = [
                h.model_copy(update={"why": h.why.model_copy(update={"keyword_score": None})}) for h in hits
            ]
        text = present.block(hits, who.memory.settings.present_view)
        return SearchResult(hits=hits, explanations=[h.why.describe() for h in hits], text=text)

    @app.post("/v1/enrich", status_code=202, response_model=Job, tags=["notes"])
    def enrich(body: EnrichRequest, who: Who, response: Response) -> Job:
        """Finish pending notes in the background (the LLM was unavailable when they were added)."""

        def work(progress: Any) -> dict[str, Any]:
            report: EnrichReport = who.memory.enrich(body.limit, body.include_failed, progress)
            return report.model_dump()

        job = jobs.submit("enrich", who.owner, 0, work, lane=who.memory.scope)
        response.headers["Location"] = f"/v1/jobs/{job.id}"
        return job

    @app.get("/v1/export", tags=["notes"], response_class=StreamingResponse)
    def export(who: Who) -> StreamingResponse:
        """The scope's notes, links, versions and LLM calls as JSON lines (the `amem import` format)."""

        def lines() -> Iterator[str]:
            for line in export_lines(who.memory):
                yield line + "\n"

        return StreamingResponse(
            lines(),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="amem-export.jsonl"'},
        )

    @app.post(
        "/v1/import",
        response_model=ImportReport,
        tags=["notes"],
        openapi_extra={"requestBody": {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}},
    )
    async def import_(
        who: Who,
        request: Request,
        rescope: Annotated[
            bool, Query(description="copy notes of another scope into the caller's (new ids)")
        ] = False,
    ) -> ImportReport:
        """Load an export (the body: JSON lines as ``/v1/export`` writes them), all or nothing. Every note
        must belong to the caller's scope, or ``rescope`` copies it in under a new id; links, versions and
        LLM calls may only name notes of the body or of that scope; the export must be embedded with the
        server's embedder. Records already present are skipped, so a retry is safe."""
        raw = await request.body()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"the body is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        lines = lines_of(text)
        # adopt_model=False: one tenant's file must not choose the model every tenant embeds with
        return await run_in_threadpool(
            import_lines, who.memory, lines, "body", rescope=rescope, adopt_model=False
        )

    @app.get("/v1/graph", response_model=Graph, tags=["graph"])
    async def graph(
        who: Who,
        limit: Annotated[int, Query(ge=1, le=20_000)] = 2000,
        after: datetime | None = None,
        before: datetime | None = None,
    ) -> Graph:
        """The newest notes and the links between them, for drawing."""
        filters = Filters(event_after=after, event_before=before) if after or before else None
        return await who.aio.graph(limit, filters)

    @app.get("/v1/audit", tags=["meta"])
    async def audit(who: Who, examples: Annotated[int, Query(ge=0, le=100)] = 5) -> AuditReport:
        """How faithful the LLM-written fields of the caller's scope are: grounded contexts and updates,
        example leaks, loops, link reasons, tag concentration, and what the checks refused."""
        return await who.aio.audit(examples)

    @app.get("/v1/stats", tags=["meta"])
    async def stats(who: Who) -> dict[str, Any]:
        """Counts for the caller's scope (and the whole store when the server has no keys)."""
        data = await who.aio.stats()
        return {"in_scope": data["in_scope"]} if who.owner else data

    mount_mem0(app, amemory, ring)  # mem0's REST dialect under /mem0

    if web:
        _mount_web(app)

    return app


def _check_run(memory: Memory, run_id: str) -> None:
    """Refuse (404) a run that wrote nothing, or that touched a note outside the memory's scope: the
    library's undo restores every note of a run, so one key must not undo a run over another's notes."""
    versions = memory.store.versions_in_batch(run_id) if "\x00" not in run_id else []
    notes = memory.store.get_notes(sorted({v.note_id for v in versions}))
    if not versions or not all(memory.scope.matches(n) for n in notes.values()):
        raise NotFound(
            f"no consolidation run {run_id!r} in this scope; a consolidation job's result has its run_id"
        )


def _mount_web(app: FastAPI) -> None:
    root = resources.files("amem") / "web"

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(root / "index.html"), media_type="text/html")

    base = Path(str(root)).resolve()
    files = {p.relative_to(base).as_posix(): p for p in base.rglob("*") if p.is_file()}

    @app.get("/static/{name:path}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        target = files.get(name)  # only the page's own files, looked up by name: no path is ever built
        if target is None:
            raise HTTPException(404, f"no file {name!r}")
        return FileResponse(str(target))
