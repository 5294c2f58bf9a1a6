"""`amem bench scale --citus URL`: many users on a Citus cluster next to single-node PostgreSQL.

Users are added in steps (for example 100, then 300, then 1,000 users of 1,000 notes each); after each
step, searches by random loaded users measure p50/p95 per preset, so the table shows how latency moves when
the number of users grows with the notes per user fixed (on Citus every search stays on its user's shard:
it should not move). Single adds (one note per transaction, as an agent writes) are timed at each step
too. No LLM is involved; the embedder is the one chosen (``fake:384`` by default).

The Citus URL names a database on the coordinator with the citus extension and its workers registered;
amem's tables in it are dropped first. The PostgreSQL URL names a server, where a fresh database
``amem_bench_users`` is made.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator
from dataclasses import replace
from functools import partial
from typing import Any

from ..config import Settings
from ..memory import Memory
from ..store import postgres_citus as citus
from .metrics import percentile
from .scale import _time_ms, synthetic_notes, synthetic_queries

Progress = Callable[[int, int], None]
PRESETS = ("paper", "hybrid", "keyword")


def user_name(i: int) -> str:
    return f"user{i:06d}"


def empty_citus(url: str) -> str:
    """Drop amem's tables in a Citus database (the next open makes and distributes them again)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        if not citus.enabled(conn):
            raise ValueError(f"{url} does not run Citus (CREATE EXTENSION citus, then add the workers)")
        conn.execute("DROP SCHEMA IF EXISTS amem CASCADE")
    return url


def run_store(
    settings: Settings,
    url: str,
    label: str,
    steps: list[int],
    per_user: int,
    queries: int = 200,
    k: int = 5,
    progress: Progress | None = None,
) -> Generator[dict[str, Any], None, None]:
    """Load users up to each step and measure there; one row per step, as each step ends (so two stores
    can be measured step by step, and a long run keeps what it measured)."""
    run_settings = replace(settings, database_url=url, llm="none", llm_cache=False)
    rng = random.Random(5)
    texts = synthetic_queries(queries)
    with Memory(settings=run_settings) as memory:
        loaded = 0
        for step in steps:
            start = time.perf_counter()
            with memory.store.bulk((step - loaded) * per_user):
                for i in range(loaded, step):
                    # every user's notes differ: the same text model, seeded by the user
                    items = synthetic_notes(per_user, seed=1000 + i)
                    memory.scoped(user_id=user_name(i)).add_many(items, batch_size=512)
                    if progress is not None:
                        progress((i + 1) * per_user, steps[-1] * per_user)
            load_seconds = time.perf_counter() - start
            added = (step - loaded) * per_user
            loaded = step
            users = [user_name(rng.randrange(loaded)) for _ in texts]
            memory.scoped(user_id=users[0]).search(texts[0], k=k)  # warm up the pool and caches
            latency: dict[str, dict[str, float]] = {}
            for preset in PRESETS:
                times = [
                    _time_ms(partial(memory.scoped(user_id=u).search, q, k=k, preset=preset))
                    for u, q in zip(users, texts, strict=True)
                ]
                latency[preset] = {
                    "p50_ms": percentile(times, 0.5) or 0.0,
                    "p95_ms": percentile(times, 0.95) or 0.0,
                }
            yield {
                "store": label,
                "users": loaded,
                "notes_per_user": per_user,
                "notes": loaded * per_user,
                "add_notes_per_s": added / max(1e-9, load_seconds),
                "single_adds_per_s": _single_adds(memory, users[:50]),
                "search": latency,
            }


def _single_adds(memory: Memory, users: list[str]) -> float:
    start = time.perf_counter()
    for n, user in enumerate(users):
        memory.scoped(user_id=user).add(f"One more note, number {n}, about kayaks and the river.")
    return len(users) / (time.perf_counter() - start)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| store | users | notes | bulk add notes/s | single adds/s | paper p50 / p95 ms "
        "| hybrid p50 / p95 ms | keyword p50 / p95 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["search"]
        cells = " | ".join(f"{s[p]['p50_ms']:.1f} / {s[p]['p95_ms']:.1f}" for p in PRESETS)
        lines.append(
            f"| {r['store']} | {r['users']:,} | {r['notes']:,} | {r['add_notes_per_s']:.0f} "
            f"| {r['single_adds_per_s']:.0f} | {cells} |"
        )
    return "\n".join(lines)
