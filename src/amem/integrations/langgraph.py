"""LangGraph's long-term memory store on amem: ``AmemStore`` is a ``langgraph.store.base.BaseStore``.

Whatever takes a LangGraph store (a compiled graph's ``store=``, ``create_react_agent``, LangMem's tools)
then keeps its memories as A-MEM notes: enriched, linked, searched by amem's hybrid search plus links.

Mapping (docs/integrations/langgraph.md):

- an item is one note. Its text is what amem enriches, embeds and searches: the value's ``content``,
  ``text`` or ``memory`` field (looked for inside a dict held there too), else the value as JSON; an
  ``index={"fields": [...]}`` (store-wide) or a put's ``index=[...]`` names the fields instead. The value
  itself is kept in the note's metadata (``lg_value``), so ``get`` returns exactly what was put.
- ``lg_ns`` (the namespace, labels joined with ".") and ``lg_key`` find an item again; ``lg_ns_<n>``
  (its first n labels) lets a prefix search filter inside the store; ``lg_at`` is the time of the put.
- a namespace's amem scope: ``user_depth`` leading labels, joined with ".", are the note's user_id
  (default: all of them, so links and evolution never cross namespaces; 0: the memory's own user);
  the memory's agent_id and run_id are kept.
- putting a key again updates its note (history kept; changed text is enriched again); ``None`` deletes
  it. Exact duplicates under different keys stay two items (amem's dedupe is off for keyed writes).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple, cast

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    get_text_at_path,
    validate_op_namespace,
)

from ..aio import AsyncMemory
from ..errors import InvalidInput
from ..memory import Memory
from ..notes import Note, utcnow
from ..store import Filters

__all__ = ["AmemStore"]

NS, KEY, VALUE, AT, UNINDEXED = "lg_ns", "lg_key", "lg_value", "lg_at", "lg_unindexed"
TEXT_FIELDS = ("content", "text", "memory")
PAGE = 500  # notes read per page when a listing is scanned
MAX_K = 1000  # Memory.search's largest k


def level(n: int) -> str:
    """The metadata key holding an item's first ``n`` namespace labels."""
    return f"lg_ns_{n}"


def joined(labels: Sequence[str]) -> str:
    return ".".join(labels)  # labels never hold a "." (LangGraph refuses it), so this is unambiguous


class _Call(NamedTuple):
    """One Memory/AsyncMemory method call, in the scope of ``user``: the op logic is written once and
    run by a sync driver (``Memory``) and an async one (``AsyncMemory``)."""

    user: str | None
    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] | None = None


Steps = Generator[_Call, Any, Result]


class AmemStore(BaseStore):
    """A LangGraph store whose items are amem notes. ``AmemStore()`` opens ``Memory()`` from the
    configuration (keyword arguments go to ``Memory``); ``AmemStore(memory=m)`` shares a Memory or an
    AsyncMemory. ``batch`` runs on the Memory, ``abatch`` on its AsyncMemory."""

    supports_ttl = False  # amem expires notes by archiving them at consolidation, not by deleting on read

    def __init__(
        self,
        memory: Memory | AsyncMemory | None = None,
        *,
        user_depth: int | None = None,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        expand: bool = True,
        **config: Any,
    ) -> None:
        if ttl is not None:  # NotImplementedError: what LangGraph's own BaseStore raises for TTL it lacks
            raise NotImplementedError(
                "AmemStore keeps no TTL: items stay until deleted. For expiring memories give amem notes "
                "an expiry and run consolidation (`amem consolidate`), which archives them"
            )
        if index is not None and ({"embed", "dims"} & set(index)):
            raise ValueError(
                "AmemStore embeds with amem's own embedder (Memory(embedder=...) or AMEM_EMBEDDER); "
                "index takes only 'fields', the value fields that make a note's text"
            )
        if user_depth is not None and user_depth < 0:
            raise ValueError("user_depth must be None (the whole namespace), 0 (the memory's user) or more")
        if memory is None:
            memory, self._owned = Memory(**config), True
        elif config:
            raise TypeError(f"give a memory or Memory's arguments, not both: {', '.join(config)}")
        else:
            self._owned = False
        self._amemory = memory if isinstance(memory, AsyncMemory) else AsyncMemory.wrap(memory)
        self.memory: Memory = self._amemory.sync
        self._settings = replace(self.memory.settings, dedupe=False)  # a key is an item, even a repeat
        self.user_depth = user_depth
        self.fields: list[str] | None = list((index or {}).get("fields") or []) or None
        self.expand = expand

    def close(self) -> None:
        """Closes the memory when this store opened it (one given is the caller's to close)."""
        if self._owned:
            self.memory.close()

    def __enter__(self) -> AmemStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the two drivers -------------------------------------------------------------------------
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        reads, puts = self._plan(ops)
        results: list[Result] = [self._run(self._steps(op)) for op in reads]
        for put in puts:
            self._run(self._put(put))
        return self._ordered(ops, results)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        reads, puts = self._plan(ops)
        results = list(await asyncio.gather(*(self._arun(self._steps(op)) for op in reads)))
        for put in puts:
            await self._arun(self._put(put))
        return self._ordered(ops, results)

    def _run(self, steps: Steps) -> Result:
        try:
            call = next(steps)
            while True:
                method = getattr(self._view(call.user), call.method)
                call = steps.send(method(*call.args, **(call.kwargs or {})))
        except StopIteration as done:
            return cast(Result, done.value)

    async def _arun(self, steps: Steps) -> Result:
        try:
            call = next(steps)
            while True:
                method = getattr(self._aview(call.user), call.method)
                call = steps.send(await method(*call.args, **(call.kwargs or {})))
        except StopIteration as done:
            return cast(Result, done.value)

    def _view(self, user: str | None) -> Memory:
        scope = self.memory.scope
        view = self.memory.scoped(user, scope.agent_id, scope.run_id)
        view.settings = self._settings
        return view

    def _aview(self, user: str | None) -> AsyncMemory:
        scope = self.memory.scope
        view = self._amemory.scoped(user, scope.agent_id, scope.run_id)
        view.sync.settings = self._settings
        return view

    @staticmethod
    def _plan(ops: list[Op]) -> tuple[list[Op], list[PutOp]]:
        """Reads see the store as it was before the batch; then the puts, the last one per item winning
        (as LangGraph's own stores do)."""
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for op in ops:
            validate_op_namespace(op)
            if isinstance(op, PutOp):
                _check_put(op)
                puts[(tuple(op.namespace), op.key)] = op
            elif not isinstance(op, GetOp | SearchOp | ListNamespacesOp):
                raise TypeError(f"unknown store operation {type(op).__name__}")
        return [op for op in ops if not isinstance(op, PutOp)], list(puts.values())

    @staticmethod
    def _ordered(ops: list[Op], reads: list[Result]) -> list[Result]:
        answers = iter(reads)
        return [None if isinstance(op, PutOp) else next(answers) for op in ops]

    # -- scopes ----------------------------------------------------------------------------------
    def _user_of(self, namespace: Sequence[str]) -> str | None:
        if self.user_depth == 0:
            return self.memory.scope.user_id
        return joined(namespace if self.user_depth is None else namespace[: self.user_depth])

    def _user_under(self, prefix: Sequence[str]) -> str | None:
        """The one user every namespace under ``prefix`` maps to, or None (the search spans users)."""
        if self.user_depth == 0 or (self.user_depth is not None and len(prefix) >= self.user_depth):
            return self._user_of(prefix)
        return None

    # -- the operations, written once --------------------------------------------------------------
    def _steps(self, op: Op) -> Steps:
        if isinstance(op, GetOp):
            return self._get(op)
        if isinstance(op, SearchOp):
            return self._search(op)
        assert isinstance(op, ListNamespacesOp)
        return self._namespaces(op)

    def _get(self, op: GetOp) -> Steps:
        found = yield _Call(self._user_of(op.namespace), "list", (), {"limit": 1, "filters": _at(op)})
        return next((item for item in map(_item, found) if item is not None), None)

    def _search(self, op: SearchOp) -> Steps:
        prefix = tuple(op.namespace_prefix)
        user, filters = self._user_under(prefix), Filters(metadata={level(len(prefix)): joined(prefix)})
        want = max(op.offset, 0) + op.limit
        if op.limit <= 0:
            return []
        if not (op.query and op.query.strip()):  # no query: the items newest first, as a listing
            if not op.filter:
                notes = yield _Call(
                    user, "list", (), {"limit": op.limit, "offset": op.offset, "filters": filters}
                )
                return [hit for hit in (_hit(n, None) for n in notes) if hit is not None]
            kept: list[SearchItem] = []
            for offset in itertools.count(0, PAGE):
                page = yield _Call(user, "list", (), {"limit": PAGE, "offset": offset, "filters": filters})
                kept += [
                    h for h in (_hit(n, None) for n in page) if h is not None and _matches(h.value, op.filter)
                ]
                if len(kept) >= want or len(page) < PAGE:
                    break
            return list(kept[op.offset : want])
        k = want
        while True:  # amem's ranking; the value filter is applied to its hits, asking for more until enough
            hits = yield _Call(
                user, "search", (op.query,), {"k": min(k, MAX_K), "filters": filters, "expand": self.expand}
            )
            kept = [
                item
                for item in (_hit(h.note, h.score) for h in hits if not h.note.metadata.get(UNINDEXED))
                if item is not None and (not op.filter or _matches(item.value, op.filter))
            ]
            direct = sum(1 for h in hits if h.why.via_link_from is None)
            if len(kept) >= want or direct < min(k, MAX_K) or k >= MAX_K:
                return list(kept[op.offset : want])
            k *= 4

    def _namespaces(self, op: ListNamespacesOp) -> Steps:
        conditions = tuple(op.match_conditions or ())
        prefix = next((c.path for c in conditions if c.match_type == "prefix"), ())
        fixed = tuple(itertools.takewhile(lambda label: label != "*", prefix))
        user, filters = self._user_under(fixed), Filters(metadata={level(len(fixed)): joined(fixed)})
        seen: set[tuple[str, ...]] = set()
        for offset in itertools.count(0, PAGE):
            page = yield _Call(user, "list", (), {"limit": PAGE, "offset": offset, "filters": filters})
            seen.update(tuple(n.metadata[NS].split(".")) for n in page if isinstance(n.metadata.get(NS), str))
            if len(page) < PAGE:
                break
        names = [ns for ns in seen if all(_match(c, ns) for c in conditions)]
        if op.max_depth is not None:
            names = list({ns[: op.max_depth] for ns in names})
        return sorted(names)[op.offset : op.offset + op.limit]

    def _put(self, op: PutOp) -> Steps:
        user = self._user_of(op.namespace)
        found = yield _Call(user, "list", (), {"limit": 100, "filters": _at(op)})
        if op.value is None:
            for note in found:
                yield _Call(user, "delete", (note.id,))
            return None
        paths = op.index if isinstance(op.index, list) else self.fields
        text, meta = _text(op.value, paths), _metadata(op, unindexed=op.index is False)
        if not found:
            yield _Call(user, "add", (text,), {"metadata": meta})
            return None
        note, *copies = found  # newest first; a copy left by two racing first puts goes
        for copy in copies:
            yield _Call(user, "delete", (copy.id,))
        changed = text != note.content
        yield _Call(user, "update", (note.id,), {"content": text if changed else None, "metadata": meta})
        if changed and self.memory.llm_enabled:  # new text: enriched again, as add would enrich it
            if self._settings.enrich_in_background:
                view = self._view(user)
                view.background.submit(view.scope)
            else:
                yield _Call(user, "enrich")
        return None


def _check_put(op: PutOp) -> None:
    if not op.namespace:
        raise InvalidNamespaceError("a namespace cannot be empty")
    if op.namespace[0] == "langgraph":
        raise InvalidNamespaceError(f'a namespace cannot start with "langgraph": {op.namespace}')
    if op.ttl is not None:  # as LangGraph's BaseStore.put does when supports_ttl is False
        raise NotImplementedError("AmemStore keeps no TTL (supports_ttl is False); put with ttl=None")
    if op.value is not None:
        if not isinstance(op.value, Mapping):
            raise InvalidInput(f"a store value is a dict, not {type(op.value).__name__}")
        try:
            json.dumps(op.value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"the value of {op.namespace}/{op.key} must be plain JSON: {exc}") from None


def _at(op: GetOp | PutOp) -> Filters:
    return Filters(metadata={NS: joined(op.namespace), KEY: op.key})


def _metadata(op: PutOp, unindexed: bool) -> dict[str, Any]:
    ns = tuple(op.namespace)
    assert op.value is not None
    meta: dict[str, Any] = {NS: joined(ns), KEY: op.key, VALUE: dict(op.value), AT: utcnow().isoformat()}
    meta.update({level(n): joined(ns[:n]) for n in range(len(ns) + 1)})
    if unindexed:
        meta[UNINDEXED] = True
    return meta


def _text(value: Mapping[str, Any], paths: Sequence[str] | None) -> str:
    """The note's text: the named fields' text, else the first text field, else the value as JSON."""
    if paths:
        found = "\n".join(t.strip() for path in paths for t in get_text_at_path(value, path) if t.strip())
        if found:
            return found
    return _text_field(value) or json.dumps(value, ensure_ascii=False)


def _text_field(value: Mapping[str, Any]) -> str | None:
    for field in TEXT_FIELDS:
        inner = value.get(field)
        if isinstance(inner, str) and inner.strip():
            return inner.strip()
        if isinstance(inner, Mapping) and (text := _text_field(inner)):
            return text
    return None


def _item(note: Note) -> Item | None:
    hit = _hit(note, None)
    return None if hit is None else Item(**{f: getattr(hit, f) for f in Item.__slots__})


def _hit(note: Note, score: float | None) -> SearchItem | None:
    """The item a note holds (None for a note whose store metadata was edited away)."""
    meta = note.metadata
    ns, key, value, at = meta.get(NS), meta.get(KEY), meta.get(VALUE), meta.get(AT)
    if not (isinstance(ns, str) and isinstance(key, str) and isinstance(value, dict) and isinstance(at, str)):
        return None
    return SearchItem(
        namespace=tuple(ns.split(".")),
        key=key,
        value=value,
        created_at=note.ingest_time,
        updated_at=max(datetime.fromisoformat(at), note.ingest_time),  # a first put is stamped just before
        score=score,
    )


def _match(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(path) > len(namespace):
        return False
    part = (
        namespace[: len(path)]
        if condition.match_type == "prefix"
        else namespace[len(namespace) - len(path) :]
    )
    return all(want in ("*", have) for want, have in zip(path, part, strict=True))


def _matches(value: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """LangGraph's value filter: equality (nested dicts and lists compared part by part) or operators."""
    return all(_fits(value.get(field), cond) for field, cond in wanted.items())


def _fits(have: Any, cond: Any) -> bool:
    if isinstance(cond, Mapping):
        if any(isinstance(k, str) and k.startswith("$") for k in cond):
            return all(_compare(have, operator, operand) for operator, operand in cond.items())
        return isinstance(have, Mapping) and _matches(have, cond)
    if isinstance(cond, list | tuple):
        return (
            isinstance(have, list | tuple)
            and len(have) == len(cond)
            and all(_fits(h, c) for h, c in zip(have, cond, strict=True))
        )
    return bool(have == cond)


def _compare(have: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return _fits(have, operand)
    if operator == "$ne":
        return not _fits(have, operand)
    tests = {"$gt": (1,), "$gte": (0, 1), "$lt": (-1,), "$lte": (-1, 0)}
    if operator not in tests:
        raise ValueError(f"unknown filter operator {operator!r}: use $eq, $ne, $gt, $gte, $lt or $lte")
    if isinstance(have, bool) or isinstance(operand, bool):
        return False  # True is not a number to compare
    try:
        sign = (have > operand) - (have < operand)
    except TypeError:
        return False  # a missing field or one of another type never matches a comparison
    return sign in tests[operator]
