"""What one search costs in the library, next to what it costs through `amem serve` (BENCHMARKS.md).

Run from the repository root: .venv/bin/python bench/results/serve-qwen/search_cost.py
The first 200 turns of conv-26 in a fresh SQLite memory (fake-enriched, MiniLM embeddings), then the
conversation's first 100 questions: the query embedding alone, the whole search in the library, and the
whole search as `POST /v1/search` on the app in-process (FastAPI's test client, no socket).
"""

import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from amem import Memory, locomo
from amem.llm.fake import FakeLLM
from amem.server.api import create_app

conv = next(c for c in locomo.load("../shared/data/locomo-dev.json") if c.sample_id == "conv-26")
home = Path(tempfile.mkdtemp())
memory = Memory(f"sqlite:///{home}/m.db", llm=FakeLLM(), embedder="local", user_id="bench")
memory.add_many([{"content": t.content(), "event_time": t.event_time} for t in conv.turns[:200]])
questions = [q["question"] for q in conv.qa][:100]
memory.search(questions[0])


def per_call_ms(run) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for q in questions:
        run(q)
    return (time.perf_counter() - start) / len(questions) * 1000


embed = per_call_ms(memory.embedder.embed_query)
library = per_call_ms(lambda q: memory.search(q, 5, track=False))
with TestClient(create_app(memory.scoped(), web=False)) as client:
    client.post("/v1/search?user_id=bench", json={"query": questions[0], "k": 5})
    http = per_call_ms(lambda q: client.post("/v1/search?user_id=bench", json={"query": q, "k": 5}))
print(f"query embedding {embed:.1f} ms, search in the library {library:.1f} ms, ", end="")
print(f"through the app {http:.1f} ms")
