"""`amem bench scale`: add throughput, search latency, size and memory at growing note counts.

No LLM is involved (notes are stored pending); the embedder is the one chosen (``fake:384`` by default, so
that 10^5 notes take minutes, not an hour). Each size gets a fresh store; the queries are the same for
every preset, and ``paper`` (dense only) is the baseline that ``hybrid`` is compared with.
"""

from __future__ import annotations

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

Progress = Callable[[int, int], None]


def synthetic_notes(n: int, seed: int = 7) -> list[NoteInput]:
    rng = random.Random(seed)
    start = datetime(2023, 1, 1, tzinfo=timezone.utc)
    names = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana"]
    return [
        NoteInput(
            content=f"{rng.choice(names)}: " + " ".join(rng.choices(WORDS, k=rng.randint(8, 20))) + ".",
            event_time=start + timedelta(minutes=7 * i),
            metadata={"n": i},
        )
        for i in range(n)
    ]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_size(
    settings: Settings, folder: Path, n: int, queries: int = 200, k: int = 5, progress: Progress | None = None
) -> dict[str, Any]:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    db = folder / "memory.db"
    run_settings = replace(settings, database_url=f"sqlite:///{db}", llm="none", llm_cache=False)
    items = synthetic_notes(n)
    with Memory(settings=run_settings, user_id="bench") as memory:
        rss_before = _rss_mb()
        start = time.perf_counter()
        memory.add_many(items, batch_size=512, progress=progress)
        add_seconds = time.perf_counter() - start
        rng = random.Random(11)
        texts = [" ".join(rng.choices(WORDS, k=rng.randint(3, 8))) for _ in range(queries)]
        memory.search(texts[0], k=k)  # loads the matrix: first-search cost is reported separately
        first_ms = _time_ms(lambda: memory.search(texts[1], k=k))
        latency: dict[str, dict[str, float]] = {}
        for preset in ("paper", "hybrid"):
            times = [_time_ms(partial(memory.search, q, k=k, preset=preset)) for q in texts]
            latency[preset] = {
                "p50_ms": percentile(times, 0.5) or 0.0,
                "p95_ms": percentile(times, 0.95) or 0.0,
            }
        rss_after = _rss_mb()
    size = sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("memory.db"))
    return {
        "notes": n,
        "embedder": settings.embedder,
        "add_notes_per_s": n / add_seconds,
        "search": latency,
        "search_after_load_ms": first_ms,
        "db_bytes": size,
        "db_bytes_per_note": size / n,
        "rss_growth_bytes_per_note": max(0.0, (rss_after - rss_before) * 1024 * 1024 / n),
    }


def _time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| notes | embedder | add notes/s | paper p50 / p95 ms | hybrid p50 / p95 ms | hybrid/paper p50 "
        "| DB bytes/note | RSS growth bytes/note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, h = r["search"]["paper"], r["search"]["hybrid"]
        lines.append(
            f"| {r['notes']:,} | {r['embedder']} | {r['add_notes_per_s']:.0f} "
            f"| {p['p50_ms']:.1f} / {p['p95_ms']:.1f} "
            f"| {h['p50_ms']:.1f} / {h['p95_ms']:.1f} | {h['p50_ms'] / p['p50_ms']:.2f}x "
            f"| {r['db_bytes_per_note']:.0f} | {r['rss_growth_bytes_per_note']:.0f} |"
        )
    return "\n".join(lines)
