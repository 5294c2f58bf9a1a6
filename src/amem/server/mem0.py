"""The mem0 dialect of `amem serve`: mem0's REST routes under ``/mem0``, so mem0's own ``MemoryClient``
(and the integrations built on it) work against amem with ``host="http://HOST:PORT/mem0"``.

Every route is one AsyncMemory call seen through the caller's scope, as amem's own routes are: a key is
bound to one user (mem0 sends ``Authorization: Token KEY``), a note of another user answers 404 exactly
as a missing one, and a user_id that is not the key's own is refused. Messages are stored as notes as
they are: mem0's LLM fact extraction (``infer``) is not run; amem's enrichment writes the keywords, tags,
context and links instead. What amem cannot do answers a JSON error (mostly 501), never a fake success.
Errors carry mem0's ``detail`` (what its client shows) and amem's ``error`` object.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations at definition time

from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from .. import __version__
from ..aio import AsyncMemory
from ..errors import (
    AmemError,
)
from ..notes import Note, NoteStatus, utcnow
from .auth import KeyRing
from .mem0_shapes import (
    ENTITIES,
    KEPT,
    AddBody,
    BatchBody,
    Criteria,
    ListBody,
    Refused,
    SearchBody,
    UpdateBody,
    criteria,
    entity_ids,
    history_json,
    hit_json,
    memory_json,
    notes_of,
    parse_time,
    query_criteria,
)
from .status import status_of

PREFIX = "/mem0"
MAX_PAGE = 1000
_KINDS = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    422: "invalid_request",
    501: "not_supported",
}
#: what amem says for the parts of mem0's API it does not serve (path prefix after /mem0/)
UNSUPPORTED = {
    "v1/feedback": "amem takes no feedback on memories (search records what it returns on its own)",
    "v1/exports": "amem has no schema exports; its own GET /v1/export writes the scope as JSON lines",
    "v1/summary": "amem writes no summaries",
    "v1/entities": "amem does not list users, agents or runs",
    "v2/entities": "amem keeps no entity profiles",
    "v2/profiles": "amem builds no user profiles",
    "v1/event": "amem stores notes before it answers an add: there are no events to poll",
    "api/v1/orgs": "amem has no organisations or projects",
    "api/v1/webhooks": "amem sends no webhooks",
}


F = TypeVar("F", bound=Callable[..., Any])


def _error(
    status: int, message: str, kind: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    kind = kind or _KINDS.get(status, "error")
    body = {"detail": message, "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


class _Route(APIRoute):
    """Answers every refusal in mem0's error shape, which mem0's client turns into its own exceptions."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handle(request)
            except Refused as exc:
                return _error(exc.status, exc.message, headers=exc.headers)
            except AmemError as exc:
                status, kind = status_of(exc)
                return _error(status, str(exc), kind)
            except RequestValidationError as exc:
                parts = [
                    f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
                    for e in exc.errors()[:5]
                ]
                return _error(422, "; ".join(parts) or "invalid request")
            except HTTPException as exc:
                return _error(exc.status_code, str(exc.detail))

        return run


# -- the routes ------------------------------------------------------------------------------------------
def mount(app: FastAPI, memory: AsyncMemory, ring: KeyRing) -> None:
    """Serve mem0's REST API for ``memory`` under ``/mem0`` (``ring`` empty: no keys, scopes from the
    request's user_id/agent_id/run_id, as amem's own routes)."""
    router = APIRouter(prefix=PREFIX, route_class=_Route, tags=["mem0"])

    def route(path: str, *methods: str) -> Callable[[F], F]:
        def register(func: F) -> F:  # with and without mem0's trailing slash
            router.add_api_route(path, func, methods=list(methods))
            router.add_api_route(path.rstrip("/"), func, methods=list(methods), include_in_schema=False)
            return func

        return register

    def owner_of(request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        known = scheme.lower() in ("token", "bearer") and token.strip()
        owner = ring.user_for(token.strip()) if known else None
        if owner is None:
            raise Refused(
                401,
                "missing or unknown API key: MemoryClient(api_key=KEY) sends Authorization: Token KEY",
                {"WWW-Authenticate": "Token"},
            )
        return owner

    def caller(request: Request, crit: Criteria | None = None) -> tuple[AsyncMemory, str | None]:
        ids = crit.ids if crit else {}
        if not ring:
            base = memory.scope
            pick = [ids.get(k, getattr(base, k)) for k in ENTITIES]
            return memory.scoped(*pick), None
        owner = owner_of(request)
        if ids.get("user_id", owner) != owner:
            raise Refused(403, "this API key is bound to another user; leave user_id out or give its own")
        return memory.scoped(owner, ids.get("agent_id"), ids.get("run_id")), owner

    async def delete_matching(mem: AsyncMemory, crit: Criteria) -> int:
        return await mem.delete_all(crit.filters(None))

    async def delete_scope(request: Request, crit: Criteria) -> int:
        mem, owner = caller(request, crit)
        if owner is None and not crit.named:
            raise Refused(400, "give user_id, agent_id, run_id or app_id: amem will not delete every memory")
        return await delete_matching(mem, crit)

    async def page_of(request: Request, crit: Criteria, show_expired: bool | None) -> dict[str, Any]:
        mem, _ = caller(request, crit)
        params = request.query_params
        try:
            page, size = int(params.get("page", 1)), int(params.get("page_size", 100))
        except ValueError:
            raise Refused(400, "page and page_size must be whole numbers") from None
        if page < 1 or not 1 <= size <= MAX_PAGE:
            raise Refused(400, f"page starts at 1 and page_size is 1 to {MAX_PAGE}")
        statuses = [NoteStatus.active, NoteStatus.archived] if show_expired else [NoteStatus.active]
        filters = crit.filters(statuses)
        notes = await mem.list(limit=size, offset=(page - 1) * size, filters=filters)
        total = await mem.count(filters)
        more = page * size < total
        return {
            "count": total,
            "next": str(request.url.include_query_params(page=page + 1, page_size=size)) if more else None,
            "previous": str(request.url.include_query_params(page=page - 1)) if page > 1 else None,
            "results": [memory_json(n) for n in notes],
        }

    @route("/v1/ping/", "GET")
    async def ping(request: Request) -> dict[str, Any]:
        """What mem0's client calls on creation: checks the key (when the server has keys). The client
        refuses to start without an organisation and a project: amem names its one of each ``amem``."""
        owner = owner_of(request) if ring else None
        return {"status": "ok", "message": f"amem {__version__} (mem0 dialect)", "user_id": owner,
                "user_email": None, "org_id": "amem", "project_id": "amem"}  # fmt: skip

    @route("/v3/memories/add/", "POST")
    async def add(body: AddBody, request: Request) -> dict[str, Any]:
        """Each message a note (no fact extraction); ``async_mode`` false waits for the enrichment. A
        message already stored in the scope answers its note with event NONE."""
        crit = criteria(entity_ids(body), body.filters)
        mem, _ = caller(request, crit)
        items = notes_of(body, crit)
        started = utcnow()
        wait = None if body.async_mode is None else not body.async_mode
        notes = await mem.add_many(items, wait=wait, bulk=False) if items else []
        results = []
        for note in notes:
            event = "ADD" if note.ingest_time >= started else "NONE"
            data = {"memory": note.content}
            results.append({"id": note.id, "memory": note.content, "event": event, "data": data})
        return {"results": results}

    route("/v1/memories/", "POST")(add)  # mem0's v1 add

    @route("/v3/memories/search/", "POST")
    async def search(body: SearchBody, request: Request) -> dict[str, Any]:
        """amem's hybrid search: ``top_k`` hits, then their linked neighbours within amem's token budget;
        ``score`` is the cosine similarity to the query, and ``threshold`` (only when given) drops lower."""
        crit = criteria(entity_ids(body), body.filters)
        mem, owner = caller(request, crit)
        expired = bool(body.show_expired)  # archived notes too; merged ones never (as the list routes)
        statuses = [NoteStatus.active, NoteStatus.archived] if expired else None
        hits = await mem.search(
            body.query, body.top_k or 10, filters=crit.filters(statuses), include_archived=expired
        )
        if body.threshold is not None:
            hits = [h for h in hits if h.score >= body.threshold]
        return {"results": [hit_json(h, owner is not None) for h in hits]}

    route("/v2/memories/search/", "POST")(search)
    route("/v1/memories/search/", "POST")(search)

    @route("/v3/memories/", "POST")
    async def list_memories(request: Request, body: ListBody | None = None) -> dict[str, Any]:
        """Newest first, ``page``/``page_size`` (query) as mem0 pages; merged notes are left out."""
        body = body or ListBody()
        crit = criteria(entity_ids(body), body.filters, start=body.start_date, end=body.end_date)
        return await page_of(request, crit, body.show_expired)

    route("/v2/memories/", "POST")(list_memories)

    @route("/v1/memories/", "GET")
    async def list_v1(request: Request) -> dict[str, Any]:
        return await page_of(request, query_criteria(request.query_params), None)

    @route("/v1/memories/", "DELETE")
    async def delete_all(request: Request) -> dict[str, Any]:
        """Every note of the scope the query names (with a key: of the key's user at most)."""
        deleted = await delete_scope(request, query_criteria(request.query_params))
        return {"message": "Memories deleted successfully!", "deleted": deleted}

    @route("/v1/memories/{memory_id}/", "GET")
    async def get(memory_id: str, request: Request) -> dict[str, Any]:
        mem, _ = caller(request, query_criteria(request.query_params))
        return memory_json(await mem.get(memory_id))

    @route("/v1/memories/{memory_id}/", "PUT")
    async def update(memory_id: str, body: UpdateBody, request: Request) -> dict[str, Any]:
        """New text and/or metadata (replacing the old, but for the role and app_id amem set) and time;
        the old version stays in the history."""
        mem, _ = caller(request, query_criteria(request.query_params))
        note = await mem.get(memory_id)
        return {**memory_json(await _update(mem, note, body)), "message": "Memory updated successfully!"}

    async def _update(mem: AsyncMemory, note: Note, body: UpdateBody) -> Note:
        expiry = "expiration_date" in body.model_fields_set
        if expiry and (body.expiration_date is not None or note.expires_at is not None):
            raise Refused(400, "amem cannot change a memory's expiration date after it is stored")
        metadata = None
        if body.metadata is not None:
            metadata = {**{k: note.metadata[k] for k in KEPT if k in note.metadata}, **body.metadata}
        when = body.timestamp
        return await mem.update(
            note.id,
            content=body.text,
            metadata=metadata,
            event_time=parse_time(when, "timestamp")[0] if when is not None else None,
        )

    @route("/v1/memories/{memory_id}/", "DELETE")
    async def delete(memory_id: str, request: Request, delete_linked: bool = False) -> dict[str, Any]:
        if delete_linked:
            raise Refused(501, "amem does not delete superseded memories with the one that replaced them")
        mem, _ = caller(request, query_criteria(request.query_params))
        await mem.delete(memory_id)
        return {"message": "Memory deleted successfully!"}

    @route("/v1/memories/{memory_id}/history/", "GET")
    async def history(memory_id: str, request: Request) -> list[dict[str, Any]]:
        mem, _ = caller(request, query_criteria(request.query_params))
        note = await mem.get(memory_id)
        return history_json(note, await mem.history(memory_id))

    @route("/v1/batch/", "PUT")
    async def batch_update(body: BatchBody, request: Request) -> dict[str, Any]:
        """Every id is checked first (one missing: 404, nothing changed), then each is updated."""
        mem, _ = caller(request, query_criteria(request.query_params))
        notes = [await mem.get(item.memory_id) for item in body.memories]
        for note, item in zip(notes, body.memories, strict=True):
            await _update(mem, note, item)
        return {"message": f"Successfully updated {len(notes)} memories"}

    @route("/v1/batch/", "DELETE")
    async def batch_delete(body: BatchBody, request: Request) -> dict[str, Any]:
        mem, _ = caller(request, query_criteria(request.query_params))
        for item in body.memories:
            await mem.get(item.memory_id)
        for item in body.memories:
            await mem.delete(item.memory_id)
        return {"message": f"Successfully deleted {len(body.memories)} memories"}

    @route("/v2/entities/{entity_type}/{entity_id}/", "DELETE")
    async def delete_entity(entity_type: str, entity_id: str, request: Request) -> dict[str, Any]:
        """mem0's delete_users: every memory of that user, agent, run or app (in the caller's scope)."""
        if entity_type not in ("user", "agent", "run", "app"):
            raise Refused(400, "the entity type is user, agent, run or app")
        deleted = await delete_scope(request, criteria({f"{entity_type}_id": entity_id}))
        return {"message": "Entity deleted successfully.", "deleted": deleted}

    route("/v1/entities/{entity_type}/{entity_id}/", "DELETE")(delete_entity)

    every = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    @router.api_route("/{rest:path}", methods=every, include_in_schema=False)
    async def unsupported(rest: str, request: Request) -> Response:
        reason = next((why for prefix, why in UNSUPPORTED.items() if rest.startswith(prefix)), None)
        what = f"{request.method} {PREFIX}/{rest}"
        raise Refused(501, f"amem's mem0 dialect does not serve {what}" + (f": {reason}" if reason else ""))

    app.include_router(router)
