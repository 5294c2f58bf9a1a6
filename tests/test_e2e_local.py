"""End to end on the real embedded models: Gemma 3 270M (llama.cpp) + MiniLM int8 ONNX + SQLite.

Gemma 270M is the fast test model; its answers are noisy, so these tests assert what the pipeline
guarantees (validated attributes, links only to offered notes of the same scope, versions, search),
not the wording. Missing weights fail with instructions; AMEM_SKIP_LOCAL_MODELS=1 skips on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from amem import EnrichState, Memory, VersionCause
from amem.config import Settings
from amem.errors import ModelNotAvailable

pytestmark = [
    pytest.mark.local_models,
    pytest.mark.skipif(os.environ.get("AMEM_SKIP_LOCAL_MODELS") == "1", reason="AMEM_SKIP_LOCAL_MODELS=1"),
]

REPO = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("AMEM_TEST_MODELS_DIR") or REPO / ".amem-test" / "models")

TURNS = [
    ("Caroline: I went to an LGBTQ support group yesterday and it was so powerful.", "2023-05-08T13:56:00"),
    ("Melanie: I painted a sunrise over the lake last year; painting calms me down.", "2023-05-08T13:58:00"),
    ("Caroline: The support group helped me feel accepted as a transgender woman.", "2023-05-25T10:00:00"),
    ("Melanie: My kids loved the pottery workshop we did together last weekend.", "2023-05-25T10:03:00"),
    ("Caroline: I'm researching adoption agencies because I want to build a family.", "2023-06-09T18:20:00"),
]


@pytest.fixture(scope="module")
def llm() -> Any:
    from amem.errors import LLMUnavailable
    from amem.llm.local import LocalLLM, resolve_runtime

    try:
        resolve_runtime("auto")
    except LLMUnavailable as exc:
        pytest.fail(f"{exc} (or AMEM_SKIP_LOCAL_MODELS=1)")

    try:
        return LocalLLM("gemma-3-270m", MODELS)
    except ModelNotAvailable as exc:
        pytest.fail(f"{exc}\n(`./scripts/test` pulls it; or set AMEM_SKIP_LOCAL_MODELS=1)")


@pytest.fixture(scope="module")
def embedder() -> Any:
    from amem.embed.local import MiniLMEmbedder

    return MiniLMEmbedder()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, llm: Any, embedder: Any) -> Memory:
    home = tmp_path_factory.mktemp("e2e")
    settings = Settings.resolve({"home": home, "llm": "local:gemma-3-270m"})
    memory = Memory(
        llm=llm, embedder=embedder, settings=settings, user_id="caroline-melanie", evolve_floor=0.4
    )
    for content, when in TURNS:
        memory.add(content, event_time=datetime.fromisoformat(when))
    return memory


def test_notes_are_constructed_and_embedded(built: Memory) -> None:
    notes = built.list(limit=10)
    assert len(notes) == len(TURNS)
    for note in notes:
        # either enriched with validated attributes, or kept pending with its error: never empty defaults
        if note.state == EnrichState.enriched:
            assert note.keywords and note.tags and len(note.context) >= 8
            assert all(k.strip() and len(k) <= 40 for k in note.keywords)
            assert all(t == t.lower() for t in note.tags)
        else:
            assert note.state == EnrichState.pending and note.last_error
        assert note.embedding_model == "local:all-minilm-l6-v2"
        assert note.event_time.tzinfo == timezone.utc
    enriched = [n for n in notes if n.state == EnrichState.enriched]
    assert len(enriched) >= len(TURNS) - 1, [n.last_error for n in notes]


def test_every_call_is_recorded_with_tokens(built: Memory) -> None:
    calls = built.llm_calls()
    construct = [c for c in calls if c.step == "construct"]
    assert len(construct) == len(TURNS)  # the default pipeline: one call per note
    # and at most one short repair per note whose context the grounding checks refused whole
    repairs = [c for c in calls if c.step == "repair"]
    assert len(repairs) == len({c.note_ids[0] for c in repairs}) <= len(TURNS)
    assert len(calls) == len(construct) + len(repairs)
    for call in calls:
        assert call.model == "local:gemma-3-270m"
        if not call.cached:
            assert call.input_tokens > 50 and call.output_tokens > 5 and call.latency_ms > 0
    # the construct calls' refusals name the notes and fields they kept out
    for r in (r for c in construct for r in c.refused):
        assert r.note_id and r.field in {"context", "keywords", "tags", "link", "update"}


def test_links_join_existing_notes_of_the_same_scope(built: Memory) -> None:
    ids = {n.id for n in built.list(limit=10)}
    for note_id in ids:
        for link in built.links(note_id):
            assert link.source_id in ids and link.target_id in ids and link.source_id != link.target_id
            assert link.llm_call_id is not None


def test_versions_trace_every_change(built: Memory) -> None:
    for note in built.list(limit=10):
        history = built.history(note.id)
        assert history[0].cause == VersionCause.create and history[0].version == 1
        assert [v.version for v in history] == list(range(1, note.version + 1))
        assert all(v.content == note.content for v in history)  # evolution never rewrites content
        for later in history[1:]:
            assert later.cause == VersionCause.evolve and later.llm_call_id


def test_what_the_real_model_wrote_is_grounded(built: Memory) -> None:
    """Gemma 270M invents freely; whatever it wrote, what got stored passes the audit."""
    report = built.audit()
    assert report.leaks.count == 0 and report.loops.count == 0, report.leaks.examples + report.loops.examples
    assert report.contexts.checked >= len(TURNS) - 1
    assert report.contexts.share_grounded == 1.0, report.contexts.examples
    assert report.updates.checked == 0 or report.updates.share_grounded == 1.0


def test_search_finds_the_relevant_turn(built: Memory) -> None:
    hits = built.search("Which group did Caroline attend?", k=3)
    top = [h.note.content for h in hits[:3]]
    assert any("support group" in c for c in top)
    assert all(0 <= h.score <= 1.0001 for h in hits)
    adoption = built.search("adoption agencies family", k=1, expand=False)[0]
    assert "adoption" in adoption.note.content
    assert adoption.why.dense_rank is not None


def test_restart_reads_the_same_memory(built: Memory, llm: Any, embedder: Any) -> None:
    again = Memory(store=built.store.url, llm=llm, embedder=embedder, settings=built.settings)
    assert again.count() == len(TURNS)
    assert again.search("pottery workshop", k=1, expand=False)[0].note.content == TURNS[3][0]


def test_cli_demo_runs_on_the_embedded_models(tmp_path: Path) -> None:
    """The README's main job, with the test model: notes, links, history, searches and costs are shown."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    for name in os.listdir(MODELS):  # reuse the pulled weights instead of downloading again
        (home / "models" / name).symlink_to(MODELS / name)
    env = {**os.environ, "AMEM_HOME": str(home), "AMEM_LLM": "local:gemma-3-270m"}
    result = subprocess.run(
        [sys.executable, "-m", "amem", "demo"], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for section in ("== 1.", "== 2.", "== 3.", "== 4.", "== 5."):
        assert section in out
    assert "keywords:" in out and "context:" in out and "why:" in out
    assert "LLM calls" in out
