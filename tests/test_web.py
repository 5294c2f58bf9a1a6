"""The web page in a real headless Chromium (Debian's package) against a server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


GRAPH_NOTES = [
    "Maya signed up for the Berlin marathon in September",
    "Maya will run the Berlin marathon in new shoes",
    "Maya trains for the marathon every Sunday morning",
    "Ben adopted a beagle named Toby",
    "Ben walks Toby by the river every evening",
    "Toby the beagle chewed Ben's running shoes",
    "Ana paints sunrises over the harbour",
    "Ana sold her first harbour painting in March",
    "Ana's studio is next to the harbour market",
    "The team moved the weekly sync to Thursday",
    "Thursday sync notes are kept in the shared drive",
    "Jonas accepted the Lisbon job and moves in May",
]

NODE_BOXES = """(() => { const g = amem.state.graph; const r = document.querySelector('#graph canvas')
    .getBoundingClientRect(); const pts = g.graphData().nodes.map(n => g.graph2ScreenCoords(n.x, n.y));
    const xs = pts.map(p => p.x), ys = pts.map(p => p.y);
    return {w: r.width, h: r.height, x0: Math.min(...xs), x1: Math.max(...xs), y0: Math.min(...ys),
            y1: Math.max(...ys)}; })()"""


def graph_fills(browser: Browser) -> tuple[float, float]:
    """How much of the canvas the nodes' bounding box covers, across and down; every node inside."""
    b = browser.evaluate(NODE_BOXES)
    assert min(b["x0"], b["y0"]) >= 0 and b["x1"] <= b["w"] and b["y1"] <= b["h"], b
    return (b["x1"] - b["x0"]) / b["w"], (b["y1"] - b["y0"]) / b["h"]


def check_labels(browser: Browser) -> list[dict[str, Any]]:
    """The labels the canvas drew (the page keeps their boxes): each holds its text, measured here
    independently, inside the canvas, off every other node's dot, and no two intersect."""
    labels: list[dict[str, Any]] = browser.evaluate("amem.state.labels")
    font = json.dumps(browser.evaluate("amem.LABEL_FONT"))
    texts = json.dumps([lb["text"] for lb in labels])
    widths = browser.evaluate(
        f"(() => {{ const c = document.createElement('canvas').getContext('2d'); c.font = {font};"
        f" return {texts}.map(t => c.measureText(t).width); }})()"
    )
    w, h = browser.evaluate(
        "(() => { const r = document.querySelector('#graph canvas').getBoundingClientRect();"
        " return [r.width, r.height]; })()"
    )
    dots = browser.evaluate(
        "(() => { const g = amem.state.graph; return g.graphData().nodes.map(n => "
        "[n.id, g.graph2ScreenCoords(n.x, n.y)]); })()"
    )

    def inside(box: dict[str, Any], x: float, y: float) -> bool:
        return bool(box["x"] < x < box["x"] + box["w"] and box["y"] < y < box["y"] + box["h"])

    for lb, width in zip(labels, widths, strict=True):
        assert lb["w"] >= width and lb["h"] >= 12, lb
        assert min(lb["x"], lb["y"]) >= 0 and lb["x"] + lb["w"] <= w and lb["y"] + lb["h"] <= h, lb
        assert not any(inside(lb, p["x"], p["y"]) for i, p in dots if i != lb["id"]), lb
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, (a, b)
    return labels


def test_the_graph_opens_zoomed_to_fit_with_labels_that_do_not_overlap(
    tmp_path: Path, browser: Browser
) -> None:
    memory = make_memory(tmp_path / "graph.db", llm=FakeLLM(), link_floor=0.0, evolve_floor=0.0)
    for i, text in enumerate(GRAPH_NOTES):
        memory.add(text, event_time=f"2024-03-{i + 1:02d}")
    for url in serve(memory):
        browser.navigate(url + "/")
        browser.wait_for("document.body.dataset.graphReady === 'yes'")
        time.sleep(1)  # the fit's animation ends
        shot = save_shot(browser, tmp_path, "web-graph-12.png")
        links = browser.evaluate("amem.state.data.edges.length")
        assert links >= 8  # a linked graph, not scattered dots
        across, down = graph_fills(browser)
        print(f"12 notes ({links} links): nodes span {across:.0%} x {down:.0%} of the canvas; {shot}")
        assert max(across, down) > 0.5

        assert len(check_labels(browser)) >= 9  # most notes are named at a glance

        # a smaller window: still fitted
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1000, "height": 700, "deviceScaleFactor": 1, "mobile": False},
        )
        browser.wait_for("document.querySelector('#graph canvas').getBoundingClientRect().width < 700")
        time.sleep(0.5)
        across, down = graph_fills(browser)
        assert max(across, down) > 0.5
        assert len(check_labels(browser)) >= 6

        # once the user zooms, a resize keeps their view
        x, y = browser.evaluate(
            "(() => { const r = document.querySelector('#graph canvas').getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        browser.send(
            "Input.dispatchMouseEvent", {"type": "mouseWheel", "x": x, "y": y, "deltaX": 0, "deltaY": 300}
        )
        browser.wait_for("amem.state.autoFit === false")
        time.sleep(0.5)
        zoom = browser.evaluate("amem.state.graph.zoom()")
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1200, "height": 800, "deviceScaleFactor": 1, "mobile": False},
        )
        time.sleep(0.5)
        assert browser.evaluate("amem.state.graph.zoom()") == zoom
        # the Fit button brings the fitted view back
        browser.evaluate("document.getElementById('fit').click()")
        time.sleep(1)
        assert browser.evaluate("amem.state.autoFit") is True
        assert max(graph_fills(browser)) > 0.5
    assert not browser.console, browser.console
    memory.close()
