"""The memory as a graph: notes as nodes, links as edges, for the web page and any other viewer.

Newest notes first up to a limit (a few thousand draw smoothly); an edge is kept only when both of its
ends are among the nodes, so a truncated graph never points at notes the viewer does not have.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from ..notes import EnrichState, Link, Note, Scope
from ..store.base import Filters, Store

LABEL_CHARS = 80


class GraphNode(BaseModel):
    id: str
    label: str
    keywords: list[str]
    tags: list[str]
    context: str
    state: EnrichState
    event_time: datetime
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    version: int


class GraphEdge(BaseModel):
    source: str
    target: str
    weight: float
    reason: str


class Graph(BaseModel):
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    total_notes: int  # in the scope and filters; more than len(nodes) when the limit cut the graph
    truncated: bool


def label(content: str) -> str:
    text = " ".join(content.split())
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1].rstrip() + "…"


def build(store: Store, scope: Scope, filters: Filters | None, limit: int) -> Graph:
    notes = store.list_notes(scope, filters, limit=limit)
    ids = {n.id for n in notes}
    fields = set(GraphNode.model_fields) - {"label"}
    nodes = [GraphNode(label=label(n.content), **n.model_dump(include=fields)) for n in notes]
    edges = [
        GraphEdge(source=link.source_id, target=link.target_id, weight=link.weight, reason=link.reason)
        for link in store.links_for(list(ids))
        if link.source_id in ids and link.target_id in ids
    ]
    total = store.count_notes(scope, filters)
    return Graph(nodes=nodes, edges=edges, total_notes=total, truncated=total > len(nodes))


class Neighbour(BaseModel):
    """A note linked to another, with the link's direction seen from that other note."""

    note: Note
    direction: Literal["out", "in"]
    reason: str
    weight: float


def linked(store: Store, scope: Scope, note_id: str) -> list[tuple[Link, Note]]:
    """The note's links with the note at their other end, where that note is in ``scope`` (writes never
    link across scopes; an imported link might)."""
    links = store.links_for([note_id])
    others = store.get_notes([lk.target_id if lk.source_id == note_id else lk.source_id for lk in links])
    pairs = [(lk, others.get(lk.target_id if lk.source_id == note_id else lk.source_id)) for lk in links]
    return [(lk, note) for lk, note in pairs if note is not None and scope.matches(note)]


def neighbours(store: Store, scope: Scope, note_id: str) -> list[Neighbour]:
    return [
        Neighbour(
            note=note,
            direction="out" if lk.source_id == note_id else "in",
            reason=lk.reason,
            weight=lk.weight,
        )
        for lk, note in linked(store, scope, note_id)
    ]
