"""AsyncMemory: the whole Memory API as coroutines; network waits awaited, blocking work off the loop."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from amem import AsyncMemory, InvalidInput, Memory, NotFound
from amem.embed.fake import FakeEmbedder
from amem.embed.openai_compat import OpenAICompatEmbedder
from amem.llm.base import Completion, Message
from amem.llm.fake import FakeLLM

from .conftest import make_memory

pytestmark = pytest.mark.anyio

# Memory's members that are not API calls, or whose async form has another name
NOT_COROUTINES = {"embedder", "llm", "llm_enabled", "runner", "checks", "scoped", "background", "close"}


@pytest.fixture
def amemory(tmp_path: Path) -> Iterator[AsyncMemory]:
    memory = AsyncMemory.wrap(make_memory(tmp_path / "m.db", user_id="alice"))
    yield memory
    memory.sync.close()


def test_every_public_memory_method_has_a_coroutine() -> None:
    public = {
        name
        for name, member in vars(Memory).items()
        if not name.startswith("_") and name not in NOT_COROUTINES and callable(member)
    }
    assert public, "Memory's public methods were not found"
    missing = sorted(n for n in public if not inspect.iscoroutinefunction(getattr(AsyncMemory, n, None)))
    assert missing == []
    assert inspect.iscoroutinefunction(AsyncMemory.aclose)
    assert inspect.iscoroutinefunction(AsyncMemory.wait_background)


async def test_the_api_round_trip(amemory: AsyncMemory) -> None:
    first = await amemory.add("Maya signed up for the Berlin marathon in September")
    second = await amemory.add("Maya bought new running shoes for the marathon")
    assert first.state.value == "enriched" and first.scope.user_id == "alice"
    hits = await amemory.search("marathon shoes", k=2)
    assert {h.note.id for h in hits} >= {second.id}
    assert (await amemory.get(first.id)).content == first.content
    assert await amemory.count() == 2
    assert [n.id for n in await amemory.list()] == [second.id, first.id]
    edited = await amemory.update(first.id, content="Maya signed up for the Berlin marathon in October")
    assert [v.version for v in await amemory.history(first.id)][-1] == edited.version
    assert (await amemory.enrich()).enriched == 1  # the edit left the note pending
    await amemory.link(first.id, second.id, "same race")
    assert any(lk.target_id == second.id for lk in await amemory.links(first.id))
    assert {n.note.id for n in await amemory.neighbours(first.id)} == {second.id}
    assert (await amemory.pin(second.id)).pinned
    with pytest.raises(InvalidInput):
        await amemory.archive(second.id)  # errors come through as the library's own
    assert (await amemory.restore(first.id, 1)).content.endswith("September")
    many = await amemory.add_many(["Maya's coach is called Jonas", "Jonas lives in Potsdam"])
    assert len(many) == 2
    assert (await amemory.stats())["in_scope"]["notes"] == 4
    assert len((await amemory.graph()).nodes) == 4
    assert (await amemory.audit()).notes >= 4
    assert (await amemory.consolidate(dry_run=True, use_llm=False)).dry_run
    assert await amemory.llm_calls(first.id)
    await amemory.delete(many[1].id)
    with pytest.raises(NotFound):
        await amemory.get(many[1].id)
    bob = amemory.scoped(user_id="bob")
    assert await bob.count() == 0 and bob.scope.user_id == "bob"


async def test_background_adds_are_awaited(amemory: AsyncMemory) -> None:
    note = await amemory.add("Priya adopted a grey cat named Miso", wait=False)
    assert note.state.value == "pending"
    assert await amemory.wait_background(timeout=30)
    assert (await amemory.get(note.id)).state.value == "enriched"
    status = amemory.background_status()
    assert status.added == 1 and status.enriched == 1 and not status.running


class SlowLLM(FakeLLM):
    """The fake model, answering after ``delay`` seconds, as a remote one would."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def complete(self, messages: list[Message], schema: Any = None, **kw: Any) -> Completion:
        time.sleep(self.delay)
        return super().complete(messages, schema, **kw)


async def test_the_event_loop_keeps_running_while_a_note_is_enriched(tmp_path: Path) -> None:
    memory = AsyncMemory.wrap(make_memory(tmp_path / "m.db", llm=SlowLLM(0.4)))
    try:
        await memory.add("Tomas moved to Lisbon in March", wait=False)  # something to find
        assert await memory.wait_background(timeout=30)
        ticks = 0
        finished: dict[str, float] = {}

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        async def searches() -> None:
            for _ in range(5):
                assert len(await memory.search("Lisbon")) >= 1
            finished["searches"] = time.monotonic()

        async def add() -> None:
            assert (await memory.add("Tomas started a job at a bakery")).state.value == "enriched"
            finished["add"] = time.monotonic()

        tick = asyncio.create_task(ticker())
        started = time.monotonic()
        await asyncio.gather(add(), searches())
        tick.cancel()
        took = finished["add"] - started
        assert took >= 0.4  # the add waited for its LLM call(s) ...
        assert finished["searches"] < finished["add"]  # ... the searches did not wait for it
        assert ticks >= took / 0.01 * 0.5  # and the event loop ran all along
    finally:
        await memory.aclose()


async def test_one_memory_serves_two_event_loops(tmp_path: Path) -> None:
    memory = AsyncMemory.wrap(make_memory(tmp_path / "m.db"))

    def run_in_new_loop(text: str) -> int:
        async def work() -> int:
            await memory.add(text)
            return await memory.count()

        return asyncio.run(work())

    # asyncio.run twice, as an agent run twice in one process does (each in its own loop)
    assert await asyncio.to_thread(run_in_new_loop, "first run: Ada likes tea") == 1
    assert await asyncio.to_thread(run_in_new_loop, "second run: Ada likes green tea") == 2
    await memory.aclose()


class EmbeddingServer:
    """An OpenAI-compatible /embeddings endpoint on 127.0.0.1 answering with the hash embedder."""

    def __init__(self) -> None:
        fake = FakeEmbedder(64)
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                outer.requests += 1
                rows = fake.embed_documents(list(body["input"])).tolist()
                data = json.dumps({"data": [{"index": i, "embedding": v} for i, v in enumerate(rows)]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class AsyncOnly(OpenAICompatEmbedder):
    """Fails if a query or a single note is embedded through the blocking client."""

    def embed_query(self, text: str) -> Any:
        raise AssertionError("the async path embedded a query on a thread")


async def test_a_remote_embedder_is_awaited_not_run_on_a_thread(tmp_path: Path) -> None:
    server = EmbeddingServer()
    embedder = AsyncOnly("test-embed", server.url, api_key="", dimensions=64)
    memory = AsyncMemory.wrap(make_memory(tmp_path / "m.db", embedder=embedder))
    blocking_batches = 0
    original = embedder._batch

    def counted(texts: list[str]) -> Any:
        nonlocal blocking_batches
        blocking_batches += 1
        return original(texts)

    embedder._batch = counted  # type: ignore[method-assign]
    try:
        note = await memory.add("Ines keeps bees on her balcony in Porto")
        before = blocking_batches
        hits = await asyncio.gather(*(memory.search("bees Porto") for _ in range(8)))
        assert all(h[0].note.id == note.id for h in hits)
        assert blocking_batches == before  # eight queries, none through the blocking client
        assert server.requests >= 9  # the note and each query went over HTTP
    finally:
        await embedder.aclose()
        await memory.aclose()
        server.close()


async def test_a_duplicate_is_folded_before_anything_is_embedded(tmp_path: Path) -> None:
    memory = AsyncMemory.wrap(make_memory(tmp_path / "m.db"))
    try:
        first = await memory.add("Ada's bike is green")
        broken = memory.sync.embedder

        def down(texts: list[str]) -> Any:
            raise AssertionError("a duplicate was embedded")

        broken.embed_documents = down  # type: ignore[method-assign]
        again = await memory.add("Ada's bike is green", metadata={"source": "chat"})
        assert again.id == first.id  # as Memory.add: the existing note, no embedding call
    finally:
        await memory.aclose()


async def test_writes_waiting_on_the_llm_leave_threads_for_searches(tmp_path: Path) -> None:
    memory = AsyncMemory.wrap(make_memory(tmp_path / "m.db", llm=SlowLLM(0.3)), threads=2)
    try:
        await memory.add("Noor plays the oud on Fridays", wait=False)
        assert await memory.wait_background(timeout=30)
        finished: dict[str, float] = {}

        async def write(i: int) -> None:
            await memory.add(f"Noor practised scale number {i} today")
            finished[f"write {i}"] = time.monotonic()

        async def search() -> None:
            await asyncio.sleep(0.05)  # the writes hold their threads by now
            assert await memory.search("oud")
            finished["search"] = time.monotonic()

        await asyncio.gather(*(write(i) for i in range(4)), search())
        # four enriching writes (more than the 2 quick threads) did not hold the search up
        assert finished["search"] < min(v for k, v in finished.items() if k != "search")
    finally:
        await memory.aclose()


def test_every_view_of_one_store_shares_one_bound_on_threads(tmp_path: Path) -> None:
    memory = make_memory(tmp_path / "m.db")
    first, second = AsyncMemory.wrap(memory), AsyncMemory.wrap(memory.scoped(user_id="bob"))
    assert first._threads is second._threads is first.scoped(user_id="eve")._threads
    other = make_memory(tmp_path / "n.db")
    assert AsyncMemory.wrap(other)._threads is not first._threads  # another store, another bound
    assert AsyncMemory.wrap(memory, threads=4)._threads.size == 4  # asked for: its own
    memory.close()
    other.close()
