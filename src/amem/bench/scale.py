"""`amem bench scale`: add throughput, search latency, size and memory at growing note counts.

No LLM is involved (notes are stored pending); the embedder is the one chosen (``fake:384`` by default, so
that 10^5 notes take minutes, not an hour). Each size gets a fresh store; the queries are the same for
every preset, and ``paper`` (dense only) is the baseline that ``hybrid`` is compared with.
"""

from __future__ import annotations

import itertools
import random
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

from ..config import Settings
from ..memory import Memory, NoteInput
from .metrics import percentile

WORDS = """
marathon training ankle physio swim beach lisbon berlin job offer flat river bike books sister
dog beagle painting sunrise lake pottery workshop kids adoption agency family support group
concert guitar violin garden tomatoes recipe bakery bread coffee hiking mountains camping tent
kayak ocean surfing school exam teacher project deadline meeting manager salary promotion
travel flight hotel museum festival birthday party gift wedding cousin grandmother hospital
doctor medicine yoga meditation novel poetry library chess football basketball tennis cycling
running race medal charity volunteer shelter animals cat horse
""".split()
FILLERS = "i you we it the a and to of in that is was for with really just so my".split()
SPEAKERS = ("Ana", "Ben")
VOCABULARY = 20_000

Progress = Callable[[int, int], None]


def _vocabulary(size: int) -> list[str]:
    """The topic words, then made-up words (distinct syllable strings) up to ``size``."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    made = (a + b + c for a in syllables for b in syllables for c in syllables)
    return WORDS + list(itertools.islice(made, size - len(WORDS)))


class TextModel:
    """Conversation-like text: two speakers (each name in half the notes, as in a LoCoMo conversation),
    filler words, and content words drawn from a Zipf-Mandelbrot law over 20,000 words, calibrated so
    that the commonest content word is in ~15% of notes, as in LoCoMo. Uniform words over a small
    vocabulary would make every query match most notes, which no real memory does."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = _vocabulary(VOCABULARY)
        weights = [1.0 / (rank + 10.0) for rank in range(1, len(self.words) + 1)]
        total = sum(weights)
        self.cum = list(itertools.accumulate(w / total for w in weights))

    def content_words(self, k: int) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.cum, k=k)

    def note(self) -> str:
        words = self.content_words(self.rng.randint(6, 14)) + self.rng.choices(FILLERS, k=6)
        self.rng.shuffle(words)
        return f"{self.rng.choice(SPEAKERS)}: {' '.join(words)}."

    def query(self) -> str:
        return f"What did {self.rng.choice(SPEAKERS)} say about {' '.join(self.content_words(3))}?"


def synthetic_notes(n: int, seed: int = 7) -> list[NoteInput]:
    model = TextModel(seed)
    start = datetime(2023, 1, 1, tzinfo=timezone.utc)
    return [
        NoteInput(content=model.note(), event_time=start + timedelta(minutes=7 * i), metadata={"n": i})
        for i in range(n)
    ]


def synthetic_queries(n: int, seed: int = 11) -> list[str]:
    model = TextModel(seed)
    return [model.query() for _ in range(n)]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_size(
    settings: Settings,
    folder: Path,
    n: int,
    queries: int = 200,
    k: int = 5,
    progress: Progress | None = None,
    postgres: str | None = None,
) -> dict[str, Any]:
    """One size on a fresh store: SQLite under ``folder``, or, given a PostgreSQL server URL, a fresh
    database ``amem_bench_<n>`` on that server (dropped first if a previous run left it)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if postgres:
        from ..store.postgres_schema import fresh_database

        url = fresh_database(postgres, f"amem_bench_{n}")
    else:
        url = f"sqlite:///{folder / 'memory.db'}"
    run_settings = replace(settings, database_url=url, llm="none", llm_cache=False)
    items = synthetic_notes(n)
    with Memory(settings=run_settings, user_id="bench") as memory:
        rss_before = _rss_mb()
        start = time.perf_counter()
        memory.add_many(items, batch_size=512, progress=progress)
        add_seconds = time.perf_counter() - start
        texts = synthetic_queries(queries)
        memory.search(texts[0], k=k)  # loads the matrix: first-search cost is reported separately
        first_ms = _time_ms(lambda: memory.search(texts[1], k=k))
        latency: dict[str, dict[str, float]] = {}
        runs = [("paper", "paper"), ("hybrid", "hybrid"), ("keyword", "keyword")]
        share = getattr(memory.store, "common_term_share", None)
        if share is not None:  # the keyword leg without common-term pruning, to show what it saves
            runs.append(("hybrid_all_terms", "hybrid"))
        for label, preset in runs:
            if label == "hybrid_all_terms":
                memory.store.common_term_share = 1.0  # type: ignore[attr-defined]
            times = [_time_ms(partial(memory.search, q, k=k, preset=preset)) for q in texts]
            latency[label] = {
                "p50_ms": percentile(times, 0.5) or 0.0,
                "p95_ms": percentile(times, 0.95) or 0.0,
            }
        if share is not None:
            memory.store.common_term_share = share  # type: ignore[attr-defined]
        rss_after = _rss_mb()
        size = int(memory.store.stats()["bytes"])
        if not postgres:  # the WAL and shared-memory files count too
            size = sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("memory.db"))
        one_by_one = incremental_rate(memory)  # after: the size and searches are of exactly n notes
        consolidation = consolidation_times(memory)
    return {
        "notes": n,
        "store": "postgresql" if postgres else "sqlite",
        "embedder": settings.embedder,
        "add_notes_per_s": n / add_seconds,
        "add_one_notes_per_s": one_by_one,
        "search": latency,
        "search_after_load_ms": first_ms,
        "db_bytes": size,
        "db_bytes_per_note": size / n,
        "rss_growth_bytes_per_note": max(0.0, (rss_after - rss_before) * 1024 * 1024 / n),
        "consolidate": consolidation,
    }


def consolidation_times(memory: Memory) -> dict[str, float]:
    """Seconds for a first consolidation (every note checked for near duplicates, every link and note
    looked at) and for the next one (only notes changed since), without an LLM: with one, the time adds
    one call per near-duplicate pair found."""
    first = memory.consolidate(use_llm=False)
    memory.add("one more note after the first consolidation")
    second = memory.consolidate(use_llm=False)
    return {
        "first_s": first.seconds,
        "next_s": second.seconds,
        "near_pairs": float(first.unconfirmed),
        "changes": float(len(first.changes)),
    }


INCREMENTAL = 200


def incremental_rate(memory: Memory) -> float:
    """Notes per second for single adds (one transaction each, as an agent writes) into the loaded store:
    the bulk rate above may build an index once at the end, these keep it up row by row."""
    extra = synthetic_notes(INCREMENTAL, seed=99)
    start = time.perf_counter()
    for item in extra:
        memory.add(item.content, event_time=item.event_time, metadata=item.metadata)
    return INCREMENTAL / (time.perf_counter() - start)


def _time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| notes | store | embedder | add notes/s | single adds/s | paper p50 / p95 ms | hybrid p50 / p95 ms "
        "| hybrid/paper p50 | keyword p50 / p95 ms | hybrid, all terms p50 / p95 ms | DB bytes/note "
        "| RSS growth bytes/note | consolidate first / next s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, h = r["search"]["paper"], r["search"]["hybrid"]
        kw, allt = r["search"]["keyword"], r["search"].get("hybrid_all_terms")
        all_terms = f"{allt['p50_ms']:.1f} / {allt['p95_ms']:.1f}" if allt else "n/a"
        single = f"{r['add_one_notes_per_s']:.0f}" if "add_one_notes_per_s" in r else "n/a"
        c = r.get("consolidate")
        cons = f"{c['first_s']:.1f} / {c['next_s']:.2f}" if c else "n/a"
        lines.append(
            f"| {r['notes']:,} | {r.get('store', 'sqlite')} | {r['embedder']} | {r['add_notes_per_s']:.0f} "
            f"| {single} | {p['p50_ms']:.1f} / {p['p95_ms']:.1f} "
            f"| {h['p50_ms']:.1f} / {h['p95_ms']:.1f} | {h['p50_ms'] / p['p50_ms']:.2f}x "
            f"| {kw['p50_ms']:.1f} / {kw['p95_ms']:.1f} "
            f"| {all_terms} "
            f"| {r['db_bytes_per_note']:.0f} | {r['rss_growth_bytes_per_note']:.0f} "
            f"| {cons} |"
        )
    return "\n".join(lines)
