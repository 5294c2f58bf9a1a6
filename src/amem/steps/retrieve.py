"""Retrieval: dense + keyword fused by reciprocal rank, then 1-hop expansion along links under a budget.

Presets: ``hybrid`` (default), ``paper`` (dense top-k plus linked neighbours, as in the paper) and
``keyword`` (BM25 only, a baseline for the benchmark).
Every hit carries its cosine similarity to the query and the reason it was returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import Settings
from ..embed.base import Embedder, Vectors
from ..errors import InvalidInput
from ..notes import Link, Note, NoteStatus, Scope, SearchHit, Why, text_problem, utcnow
from ..store.base import Filters, Store

RRF_K = 60


def approx_tokens(text: str) -> int:
    """~4 characters per token for English; cheap, and the same everywhere (bench uses it too)."""
    return max(1, (len(text) + 3) // 4)


def note_tokens(note: Note) -> int:
    return approx_tokens(note.content) + approx_tokens(note.context) + 12


@dataclass(frozen=True)
class SearchOptions:
    k: int = 5
    preset: str = "hybrid"
    expand: bool = True
    token_budget: int | None = 1200
    per_hit_links: int = 2
    pool: int = 50  # candidates taken from each index before fusion
    include_archived: bool = False  # archived and merged notes are out of search unless asked for
    link_half_life_days: float = 90.0  # expansion orders links by their decayed weight


def search_options(
    settings: Settings,
    query: str,
    k: int,
    preset: str | None,
    expand: bool,
    token_budget: int | None,
    include_archived: bool,
) -> SearchOptions:
    """A search's arguments checked (a clear error before any work) and resolved against the settings."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("query is empty; give the text to search for")
    if (problem := text_problem(query.replace("\x00", " "))) is not None:
        raise InvalidInput(f"query {problem}")
    if k < 1 or k > 1000:
        raise InvalidInput("k must be between 1 and 1000")
    preset = preset or settings.retrieval
    if preset not in ("hybrid", "paper", "keyword"):
        raise InvalidInput(f"unknown retrieval preset {preset!r}: use 'hybrid', 'paper' or 'keyword'")
    return SearchOptions(
        k=k,
        preset=preset,
        expand=expand,
        token_budget=token_budget,
        include_archived=include_archived,
        link_half_life_days=settings.link_half_life_days,
    )


def search(
    store: Store,
    embedder: Embedder,
    query: str,
    scope: Scope,
    filters: Filters | None,
    opts: SearchOptions,
    links_seen: list[Link] | None = None,
    qvec: Vectors | None = None,
) -> list[SearchHit]:
    """The hits; ``links_seen`` (if given) receives the links read around them (usage feedback).
    ``qvec``: the query's vector when the caller embedded it already (the async path awaits it)."""
    if not opts.include_archived:
        filters = (filters or Filters()).with_statuses([NoteStatus.active])
    if qvec is None:
        qvec = embedder.embed_query(query)
    pool = max(opts.pool, opts.k)
    # keyword-only search needs no dense ranking (hits get their cosine from their stored vectors)
    dense = store.nearest(qvec, pool, scope, filters) if opts.preset != "keyword" else []
    dense_rank = {nid: (i + 1, sim) for i, (nid, sim) in enumerate(dense)}
    kw_rank: dict[str, tuple[int, float]] = {}
    if opts.preset == "paper":
        ranked = [nid for nid, _ in dense[: opts.k]]
    elif opts.preset == "keyword":
        keyword = store.keyword(query, opts.k, scope, filters)
        kw_rank = {nid: (i + 1, score) for i, (nid, score) in enumerate(keyword)}
        ranked = [nid for nid, _ in keyword]
    else:
        keyword = store.keyword(query, pool, scope, filters)
        kw_rank = {nid: (i + 1, score) for i, (nid, score) in enumerate(keyword)}
        fused: dict[str, float] = {}
        for ranks in (dense_rank, kw_rank):
            for nid, (rank, _) in ranks.items():
                fused[nid] = fused.get(nid, 0.0) + 1.0 / (RRF_K + rank)
        ranked = sorted(fused, key=lambda nid: (-fused[nid], dense_rank.get(nid, (pool + 1, 0))[0]))[: opts.k]

    notes = store.get_notes(ranked)
    ranked = [nid for nid in ranked if nid in notes]
    sims = _similarities(store, qvec, ranked, dense_rank)
    hits = []
    for nid in ranked:
        d, kw = dense_rank.get(nid), kw_rank.get(nid)
        why = Why(
            dense_rank=d[0] if d else None,
            dense_score=d[1] if d else None,
            keyword_rank=kw[0] if kw else None,
            keyword_score=kw[1] if kw else None,
        )
        hits.append(SearchHit(note=notes[nid], score=sims[nid], why=why))
    hits = _prefer_current(store, qvec, hits, scope, filters)
    if opts.expand and hits:
        hits.extend(_expand(store, qvec, hits, scope, filters, opts, links_seen))
    return hits


def _prefer_current(
    store: Store, qvec: np.ndarray, hits: list[SearchHit], scope: Scope, filters: Filters | None
) -> list[SearchHit]:
    """A superseded note comes right after the note that replaced it: the newer one is put in front of
    it when it was not among the hits (so history stays in view), or moved ahead of it when it was."""
    if not any(h.note.superseded_by for h in hits):
        return hits
    by_id = {h.note.id: h for h in hits}
    wanted = [
        h.note.superseded_by for h in hits if h.note.superseded_by and h.note.superseded_by not in by_id
    ]
    newer = {
        nid: n for nid, n in store.get_notes([w for w in wanted if w]).items() if _passes(n, scope, filters)
    }
    sims = _similarities(store, qvec, list(newer), {})
    for nid, note in newer.items():
        old = next(h for h in hits if h.note.superseded_by == nid)
        why = Why(via_link_from=old.note.id, link_reason="replaces an older note")
        by_id[nid] = SearchHit(note=note, score=sims.get(nid, 0.0), why=why)
    out: list[str] = []
    for hit in hits:
        successor = hit.note.superseded_by
        if successor in by_id and successor not in out:
            out.append(successor)
        if hit.note.id not in out:
            out.append(hit.note.id)
    return [by_id[nid] for nid in out]


def _similarities(
    store: Store, qvec: np.ndarray, ids: list[str], known: dict[str, tuple[int, float]]
) -> dict[str, float]:
    out = {nid: known[nid][1] for nid in ids if nid in known}
    missing = [nid for nid in ids if nid not in out]
    for nid, vec in store.get_vectors(missing).items():
        out[nid] = float(vec @ qvec)
    return out


def _passes(note: Note, scope: Scope, filters: Filters | None) -> bool:
    if not scope.matches(note):
        return False
    if filters is None:
        return True
    if filters.event_after is not None and note.event_time < filters.event_after:
        return False
    if filters.event_before is not None and note.event_time >= filters.event_before:
        return False
    if filters.ingested_before is not None and note.ingest_time >= filters.ingested_before:
        return False
    if filters.expires_by is not None and (note.expires_at is None or note.expires_at > filters.expires_by):
        return False
    if filters.states and note.state not in filters.states:
        return False
    if filters.statuses and note.status not in filters.statuses:
        return False
    return all(note.metadata.get(key) == value for key, value in filters.metadata.items())


def _expand(
    store: Store,
    qvec: np.ndarray,
    hits: list[SearchHit],
    scope: Scope,
    filters: Filters | None,
    opts: SearchOptions,
    links_seen: list[Link] | None = None,
) -> list[SearchHit]:
    """Linked neighbours of the hits, strongest (decayed) links first, while the token budget allows."""
    seen = {h.note.id for h in hits}
    used = sum(note_tokens(h.note) for h in hits)
    links = store.links_for([h.note.id for h in hits])
    if links_seen is not None:
        links_seen.extend(links)
    now = utcnow()
    by_note: dict[str, list[tuple[str, float, str]]] = {}
    for link in links:
        weight = link.effective_weight(now, opts.link_half_life_days)
        by_note.setdefault(link.source_id, []).append((link.target_id, weight, link.reason))
        by_note.setdefault(link.target_id, []).append((link.source_id, weight, link.reason))
    wanted = {other for h in hits for other, _, _ in by_note.get(h.note.id, []) if other not in seen}
    neighbours = store.get_notes(list(wanted))
    sims = _similarities(store, qvec, list(neighbours), {})
    extra: list[SearchHit] = []
    for hit in hits:
        options = sorted(by_note.get(hit.note.id, []), key=lambda t: (-t[1], -sims.get(t[0], 0.0)))
        taken = 0
        for other, weight, reason in options:
            if taken >= opts.per_hit_links:
                break
            note = neighbours.get(other)
            if note is None or other in seen or not _passes(note, scope, filters):
                continue
            cost = note_tokens(note)
            if opts.token_budget is not None and used + cost > opts.token_budget:
                return extra
            seen.add(other)
            used += cost
            taken += 1
            why = Why(via_link_from=hit.note.id, link_reason=reason, link_weight=weight)
            extra.append(SearchHit(note=note, score=sims.get(other, 0.0), why=why))
    return extra
