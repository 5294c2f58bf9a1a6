"""The web page in a real headless Chromium (Debian's package) against a server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="pip install 'amem[server]'")
pytest.importorskip("websockets", reason="pip install websockets (dev extra)")
import uvicorn

from amem import Memory
from amem.llm.fake import FakeLLM
from amem.notes import Link
from amem.server.api import create_app
from amem.server.auth import KeyRing
from tests.cdp import Browser, chromium_path
from tests.conftest import make_memory

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="apt-get install chromium (.ci/run does)")
SHOTS = Path(os.environ.get("AMEM_TEST_SCREENSHOTS", "")) if os.environ.get("AMEM_TEST_SCREENSHOTS") else None


def serve(memory: Memory, keys: KeyRing | None = None) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(memory, keys), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def save_shot(browser: Browser, tmp_path: Path, name: str) -> Path:
    path = (SHOTS or tmp_path) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.screenshot(path)
    assert path.stat().st_size > 10_000  # a real picture, not a blank page
    return path


def test_search_open_a_note_and_click_the_graph(tmp_path: Path, browser: Browser) -> None:
    memory = make_memory(tmp_path / "web.db", llm=FakeLLM(), link_floor=0.0, evolve_floor=0.0)
    berlin = memory.add("Maya signed up for the Berlin marathon in September", event_time="2024-03-01")
    memory.add("Maya will run the Berlin marathon in September in new shoes", event_time="2024-03-05")
    for i, text in enumerate(
        ["Ben adopted a beagle named Toby", "Ben walks Toby by the river", "Ana paints sunrises"]
    ):
        memory.add(text, event_time=f"2024-04-0{i + 1}")
    assert len(memory.history(berlin.id)) >= 2  # the newer note evolved it
    for url in serve(memory):
        browser.navigate(url + "/")
        browser.wait_for("document.body.dataset.graphNodes === '5'")
        browser.wait_for("Number(document.body.dataset.drawnNodes) === 5")  # the canvas drew every note

        browser.evaluate("document.getElementById('query').value = 'Berlin marathon'")
        browser.evaluate("document.getElementById('search-form').requestSubmit()")
        browser.wait_for("document.body.dataset.searchDone === 'yes'")
        first = browser.evaluate("document.querySelector('#results li').dataset.id")
        assert first == berlin.id
        assert "why:" in browser.evaluate("document.querySelector('#results li').innerText")

        browser.evaluate("document.querySelector('#results li').click()")
        browser.wait_for(f"document.body.dataset.noteOpen === '{berlin.id}'")
        assert browser.evaluate("document.getElementById('note-content').textContent") == berlin.content
        versions = browser.evaluate("document.querySelectorAll('#note-history .version').length")
        assert versions == len(memory.history(berlin.id))
        assert browser.evaluate("document.querySelector('#note-history .version.evolve') !== null")
        assert browser.evaluate("document.querySelectorAll('#note-links li').length") >= 1
        # what the grounding checks kept out of the LLM's answers is shown with the note
        refused = [r for c in memory.llm_calls(berlin.id) for r in c.refused if r.note_id == berlin.id]
        assert refused  # the fake LLM's "general" tag, at least
        assert browser.evaluate("document.querySelectorAll('#note-refused li').length") == len(refused)

        # a real mouse click on a drawn node opens that note
        browser.wait_for("document.body.dataset.graphReady === 'yes'")
        time.sleep(1)  # the view's pan to the opened note settles
        target = next(n for n in memory.list() if "beagle" in n.content)
        x, y = browser.evaluate(
            f"""(() => {{ const g = amem.state.graph;
                const n = g.graphData().nodes.find(n => n.id === '{target.id}');
                const p = g.graph2ScreenCoords(n.x, n.y); const r = document.querySelector('#graph canvas')
                .getBoundingClientRect(); return [r.left + p.x, r.top + p.y]; }})()"""
        )
        browser.click(x, y)
        browser.wait_for(f"document.body.dataset.noteOpen === '{target.id}'")

        # filtering by tag hides what does not match
        tag = target.tags[0]
        expected = sum(tag in n.tags for n in memory.list())
        browser.evaluate(
            f"const t = document.getElementById('tag'); t.value = {tag!r}; "
            "t.dispatchEvent(new Event('change'))"
        )
        browser.wait_for(f"Number(document.body.dataset.drawnNodes) === {expected}")
        save_shot(browser, tmp_path, "web-page.png")
    assert not browser.console, browser.console
    memory.close()


def test_a_few_thousand_nodes_draw_and_the_page_stays_responsive(tmp_path: Path, browser: Browser) -> None:
    memory = make_memory(tmp_path / "big.db", llm=FakeLLM())
    rng = np.random.default_rng(1)
    notes = [f"note {i} about topic {rng.integers(0, 50)}" for i in range(3000)]
    stored = Memory(
        store=memory.store, llm="none", embedder=memory.embedder, settings=memory.settings
    ).add_many(notes)
    ids = [n.id for n in stored]
    memory.store.upsert_links(
        [
            Link(source_id=ids[i], target_id=ids[int(j)], reason="random")
            for i in range(1, 3000)
            for j in rng.integers(0, i, 1)
        ]
    )
    for url in serve(memory):
        browser.navigate(url + "/")
        browser.wait_for("document.body.dataset.graphNodes === '2000'")  # the newest 2,000 by default
        assert "newest of 3,000" in browser.evaluate("document.getElementById('status').textContent")
        start = time.monotonic()
        browser.evaluate("document.getElementById('limit').value = '5000'")
        browser.evaluate("document.getElementById('scope').requestSubmit()")
        browser.wait_for("document.body.dataset.graphNodes === '3000'")
        # while the layout runs, the page still answers (no long freeze of the main thread)
        worst = 0.0
        while (
            browser.evaluate("document.body.dataset.graphReady") != "yes" and time.monotonic() - start < 120
        ):
            t = time.monotonic()
            browser.evaluate("1 + 1")
            worst = max(worst, time.monotonic() - t)
            time.sleep(0.2)
        browser.wait_for("document.body.dataset.graphReady === 'yes'", timeout=120)
        browser.wait_for("Number(document.body.dataset.drawnNodes) === 3000")
        print(
            f"3000 nodes: layout done in {time.monotonic() - start:.1f} s, "
            f"slowest page answer {worst * 1000:.0f} ms"
        )
        save_shot(browser, tmp_path, "web-graph-3000.png")
    memory.close()


def test_with_api_keys_the_page_asks_for_a_key_and_shows_only_its_user(
    tmp_path: Path, browser: Browser
) -> None:
    memory = make_memory(tmp_path / "keys.db", llm=FakeLLM())
    memory.scoped("alice").add("Alice keeps bees in the garden")
    memory.scoped("bob").add("Bob's secret: the safe code is 4711")
    keys = KeyRing({"alice-key-0123456789abcdef": "alice"})
    for url in serve(memory, keys):
        browser.navigate(url + "/")
        browser.wait_for("document.getElementById('status').textContent.includes('API key')")
        assert browser.evaluate("document.getElementById('user-field').hidden")
        browser.evaluate("document.getElementById('key').value = 'alice-key-0123456789abcdef'")
        browser.evaluate("document.getElementById('scope').requestSubmit()")
        browser.wait_for("document.body.dataset.graphNodes === '1'")
        labels = browser.evaluate("amem.state.data.nodes.map(n => n.label).join(' ')")
        assert "bees" in labels and "safe" not in labels
        browser.evaluate("document.getElementById('key').value = 'wrong-key-0123456789abcdef'")
        browser.evaluate("document.getElementById('scope').requestSubmit()")
        browser.wait_for("document.getElementById('status').textContent.includes('unknown API key')")
    memory.close()
