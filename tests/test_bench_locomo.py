"""The LoCoMo benchmark: metrics against hand-computed cases, and an end-to-end run on a tiny file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from amem.bench import metrics
from amem.bench.report import markdown
from amem.cli import cli

FIXTURE = Path(__file__).parent / "data" / "locomo_tiny.json"


def test_normalise_strips_case_punctuation_and_articles() -> None:
    assert metrics.normalise("The Sunrise, and a LAKE!") == "sunrise lake"


def test_token_f1_hand_computed() -> None:
    # pred: paint sunris; gold: she paint sunris over lake (articles dropped) -> P = 2/2, R = 2/5, F1 = 4/7
    assert metrics.token_f1("painting sunrises", "She painted a sunrise over the lake") == pytest.approx(
        4 / 7
    )
    assert metrics.token_f1("7 May 2023", "7 May 2023") == 1.0
    assert metrics.token_f1("Berlin", "Lisbon") == 0.0
    assert metrics.token_f1("", "") == 1.0 and metrics.token_f1("x", "") == 0.0


def test_multi_hop_f1_matches_each_gold_part() -> None:
    # gold parts: "pottery", "painting"; prediction parts: "painting", "camping"
    assert metrics.multi_f1("painting, camping", "pottery, painting") == pytest.approx(0.5)
    assert metrics.answer_scores(1, "painting, pottery", "pottery, painting")["f1"] == 1.0


def test_bleu1_hand_computed() -> None:
    # pred: go to lake (3 tokens); gold: went to lake yesterday (4) -> clipped matches to, lake = 2
    # precision 2/3, brevity penalty exp(1 - 4/3)
    assert metrics.bleu1("go to the lake", "went to the lake yesterday") == pytest.approx(
        (2 / 3) * math.exp(1 - 4 / 3)
    )
    assert metrics.bleu1("same words here", "same words here") == 1.0


def test_category_5_is_scored_as_abstention_never_against_the_trap() -> None:
    assert metrics.answer_scores(5, "Not mentioned in the conversation.", None) == {"f1": 1.0, "bleu1": 1.0}
    trap = metrics.answer_scores(5, "self-care is important", "self-care is important")
    assert trap == {"f1": 0.0, "bleu1": 0.0}
    for said in ("There is no information about that.", "The notes do not mention it", "Unknown"):
        assert metrics.abstained(said)
    assert not metrics.abstained("She went to the lake")


def test_evidence_ids_and_recall() -> None:
    assert metrics.evidence_ids(["D1:3", "D8:6; D9:17", "D", "D:11:26"]) == {"D1:3", "D8:6", "D9:17"}
    assert metrics.recall(["D1:3", "D2:1"], {"D1:3", "D8:6"}) == 0.5
    assert metrics.recall(["D1:3"], set()) is None
    assert metrics.mean([1.0, None, 0.0]) == 0.5
    assert metrics.percentile([5.0, 1.0, 3.0], 0.5) == 3.0


def test_bench_locomo_end_to_end_with_the_fake_llm(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = [
        "--home",
        str(tmp_path / "home"),
        "--llm",
        "fake",
        "--embedder",
        "fake",
        "bench",
        "locomo",
        "--data",
        str(FIXTURE),
        "--answer-llm",
        "fake",
        "--judge-llm",
        "fake",
        "--out",
        str(out),
        "--name",
        "run1",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    folder = out / "results" / "run1"
    summary = json.loads((folder / "summary.json").read_text())
    expected = {
        "bm25",
        "dense",
        "fusion",
        "full_context",
        "amem_paper",
        "amem",
        "amem_no_links",
        "amem_episode",
        "amem_episode_no_links",
        "amem_no_evolution",
        "amem_no_keywords",
        "amem_no_tags",
        "amem_no_context",
        "amem_links_only",
    }
    assert set(summary) == expected | {"run"}
    for name in expected:
        m = summary[name]
        for key in ("recall@5", "recall@10", "recall@20", "all_found@10", "f1", "bleu1", "judge"):
            assert set(m[key]) == {"1", "2", "3", "4", "5", "overall"}, (name, key)
        for key in ("context_tokens", "llm_calls_per_turn", "llm_tokens_per_turn", "seconds_per_turn"):
            assert key in m
        assert "search_p50_ms" in m and "search_p95_ms" in m
    assert summary["full_context"]["recall@5"]["overall"] == 1.0  # every turn is in the context
    assert summary["bm25"]["llm_calls_per_turn"] == 0.0
    assert 0 < summary["amem"]["llm_calls_per_turn"] <= 1.0  # the default pipeline: one call per turn
    assert summary["amem_paper"]["llm_calls_per_turn"] >= 1.0
    assert summary["run"]["conversations"] == ["conv-a", "conv-b"]
    # every LLM-built store has its faithfulness beside its recall, per conversation
    for name in ("amem", "amem_no_links", "amem_paper", "amem_no_evolution"):
        audits = summary[name]["audit"]
        assert set(audits) == {"conv-a", "conv-b"}
        assert all(a["leaks"]["count"] == 0 and a["contexts"]["checked"] > 0 for a in audits.values())
    assert "audit" not in summary["bm25"]
    assert "| contexts grounded |" in (folder / "summary.md").read_text()
    records = json.loads((folder / "records.json").read_text())
    assert {r["method"] for r in records} == expected
    first = records[0]
    for key in (
        "question",
        "category",
        "evidence",
        "retrieved@10",
        "recall@10",
        "answer",
        "f1",
        "context_tokens",
    ):
        assert key in first
    assert (folder / "recall.png").stat().st_size > 1000
    assert "| amem |" in (folder / "summary.md").read_text()
    # a rerun resumes: nothing is ingested again and cached answers cost no call
    again = CliRunner().invoke(cli, [*args[:-1], "run2"])
    assert again.exit_code == 0, again.output
    second = json.loads((out / "results" / "run2" / "summary.json").read_text())
    assert second["amem"]["recall@10"] == summary["amem"]["recall@10"]


def test_system_never_sees_gold_fields(tmp_path: Path) -> None:
    from amem.llm.fake import FakeLLM

    seen: list[str] = []
    llm = FakeLLM(handler=lambda messages, schema: seen.append(messages[-1].content) or {"answer": "x"})
    from amem.bench.locomo import EvalOptions, run_locomo
    from amem.config import Settings

    settings = Settings.resolve({"home": tmp_path, "llm": "fake", "embedder": "fake"})
    run_locomo(tmp_path / "b", settings, FIXTURE, [], ["fusion"], EvalOptions(answer_llm=llm))
    data = json.loads(FIXTURE.read_text())
    golds = [str(q.get("answer") or q.get("adversarial_answer")) for c in data for q in c["qa"]]
    assert seen and all("category" not in p for p in seen)
    for prompt in seen:
        question = prompt.rsplit("QUESTION:", 1)[1]
        assert not any(g in question for g in golds if len(g) > 3)


def test_markdown_handles_missing_answers() -> None:
    summary = {
        "bm25": {"recall@10": {"1": 0.5, "2": None, "3": None, "4": 1.0, "5": None, "overall": 0.75}},
        "run": {"conversations": ["c"]},
    }
    table = markdown(summary)
    assert "| bm25 | 0.750 |" in table and "F1" not in table


def test_truncate_keeps_sessions_and_answerable_questions() -> None:
    from amem.locomo import load, truncate

    conv = load(FIXTURE)[1]  # conv-b: sessions 1, 2 and 10
    cut, horizon = truncate(conv, max_sessions=1)
    assert {t.session for t in cut.turns} == {1}
    assert horizon is not None and all(t.event_time < horizon for t in cut.turns)
    kept = {t.dia_id for t in cut.turns}
    assert all(metrics.evidence_ids(q["evidence"]) <= kept for q in cut.qa)
    assert len(cut.qa) < len(conv.qa)
    whole, none = truncate(conv)
    assert whole is conv and none is None


def test_max_sessions_gives_every_method_the_same_turns(tmp_path: Path) -> None:
    from amem.bench.locomo import EvalOptions, run_locomo
    from amem.config import Settings

    settings = Settings.resolve({"home": tmp_path, "llm": "fake", "embedder": "fake"})
    # the raw store is ingested whole first, as a previous full run would leave it
    run_locomo(tmp_path / "b", settings, FIXTURE, [], ["bm25"], EvalOptions())
    records, summary = run_locomo(
        tmp_path / "b", settings, FIXTURE, [], ["full_context", "amem"], EvalOptions(), max_sessions=1
    )
    assert summary["run"]["max_sessions"] == 1
    for r in records:
        assert all(d.startswith("D1:") for d in r["retrieved@10"]), r


def test_no_evolution_store_puts_evolved_notes_back(tmp_path: Path) -> None:
    from amem.bench.methods import derive_no_evolution, open_memory
    from amem.config import Settings
    from amem.notes import NoteVersion, VersionCause

    settings = Settings.resolve({"home": tmp_path, "llm": "fake", "embedder": "fake"})
    out = tmp_path / "b"
    with open_memory(out, "amem", settings) as source:
        first = source.add("Caroline went to a pride parade in June.")
        second = source.add("Melanie painted a sunrise over the lake.")
        # an evolution, as the write pipeline records it: new attributes, a version caused by evolve
        evolved = first.model_copy(
            update={"context": "Evolved context.", "tags": ["evolved"], "version": first.version + 1}
        )
        source.store.update_note(evolved, source.embedder.embed_documents([evolved.embedding_text()])[0])
        source.store.add_version(NoteVersion.snapshot(evolved, VersionCause.evolve, None, "test"))
        links = len(source.store.links_for([first.id, second.id]))
    assert derive_no_evolution(out, settings) == 1
    with open_memory(out, "amem_no_evolution", settings) as derived:
        back = derived.get(first.id)
        assert (back.context, back.tags, back.keywords) == (first.context, first.tags, first.keywords)
        assert derived.get(second.id).context == second.context
        assert len(derived.store.links_for([first.id, second.id])) == links
        assert [v.cause for v in derived.history(first.id)][-1] == VersionCause.update
    assert derive_no_evolution(out, settings) == 0  # unchanged source: nothing rebuilt
    with open_memory(out, "amem", settings) as source:
        source.add("Caroline adopted a dog.")
    assert derive_no_evolution(out, settings) == 1  # the source grew: rebuilt from it
    with open_memory(out, "amem_no_evolution", settings) as derived:
        assert derived.count() == 3


def test_answer_methods_limits_which_methods_are_answered(tmp_path: Path) -> None:
    base = ["--home", str(tmp_path / "h"), "--llm", "fake", "--embedder", "fake", "bench", "locomo"]
    args = [*base, "--data", str(FIXTURE), "--methods", "bm25,fusion", "--answer-llm", "fake"]
    result = CliRunner().invoke(cli, [*args, "--answer-methods", "bm25", "--name", "r"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "h" / "bench" / "locomo" / "results" / "r" / "summary.json").read_text())
    assert "f1" in summary["bm25"] and "f1" not in summary["fusion"]
    assert summary["run"]["answer_methods"] == ["bm25"]
    bad = CliRunner().invoke(cli, [*args, "--answer-methods", "dense"])
    assert bad.exit_code != 0 and "not among --methods" in bad.output


def test_preset_option_sets_the_amem_methods_retrieval(tmp_path: Path) -> None:
    base = ["--home", str(tmp_path / "h"), "--llm", "fake", "--embedder", "fake", "bench", "locomo"]
    args = [*base, "--data", str(FIXTURE), "--methods", "bm25,amem,amem_paper", "--preset", "paper"]
    result = CliRunner().invoke(cli, [*args, "--name", "p"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "h" / "bench" / "locomo" / "results" / "p" / "summary.json").read_text())
    presets = {"bm25": "keyword", "fusion": "hybrid", "amem": "paper", "amem_paper": "paper"}
    assert summary["run"]["presets"] == presets  # fusion comes with every amem method (equal tokens)


def test_consolidate_option_scores_a_consolidated_copy_of_each_store(tmp_path: Path) -> None:
    """A turn repeated word for word (another dia_id) is folded into the first: recall still counts it,
    since the merged note stands for both turns."""
    data = json.loads(FIXTURE.read_text())
    conv = data[0]["conversation"]
    first = conv["session_1"][0]
    conv["session_2"].append({**first, "dia_id": "D2:99"})
    data[0]["qa"].append({"question": first["text"], "answer": "x", "evidence": ["D2:99"], "category": 1})
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(data))
    base = ["--home", str(tmp_path / "h"), "--llm", "fake", "--embedder", "fake", "bench", "locomo"]
    args = [*base, "--data", str(path), "--methods", "bm25,amem", "--consolidate", "--name", "c"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "h" / "bench" / "locomo" / "results" / "c"
    summary = json.loads((folder / "summary.json").read_text())
    assert {"bm25+consolidated", "amem+consolidated"} <= set(summary)
    assert set(summary["run"]["consolidation"]) == {"raw", "amem"}
    for name in ("bm25", "amem"):
        assert summary[name + "+consolidated"]["questions"] == summary[name]["questions"]
    records = json.loads((folder / "records.json").read_text())
    dup = [r for r in records if r["evidence"] == ["D2:99"] and r["method"] == "bm25"]
    assert dup and dup[0]["recall@5"] == 1.0  # found through the note the duplicate was folded into
    assert "| raw |" in (folder / "summary.md").read_text()


def test_compare_scores_a_store_built_elsewhere_beside_this_runs_methods(tmp_path: Path) -> None:
    """Before/after: a store another commit built is evaluated on the same questions, with its audit
    and its cost, and is never written to."""
    base = ["--home", str(tmp_path / "h"), "--llm", "fake", "--embedder", "fake", "bench", "locomo"]
    first = CliRunner().invoke(
        cli, [*base, "--data", str(FIXTURE), "--methods", "amem", "--out", str(tmp_path / "a")]
    )
    assert first.exit_code == 0, first.output
    built = next((tmp_path / "a" / "stores").glob("amem__*.db"))
    before = built.read_bytes()
    args = [
        *base,
        "--data",
        str(FIXTURE),
        "--methods",
        "bm25,amem",
        "--compare",
        f"before={built}",
        "--name",
        "c",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "h" / "bench" / "locomo" / "results" / "c" / "summary.json").read_text())
    assert {"amem@before", "amem_no_links@before"} <= set(summary)
    assert summary["amem@before"]["recall@10"] == summary["amem"]["recall@10"]  # same code, same store
    assert summary["amem@before"]["questions"] == summary["bm25"]["questions"]
    assert summary["amem@before"]["llm_calls_per_turn"] > 0 and "audit" in summary["amem@before"]
    assert summary["run"]["compared"] == {"before": str(built)}
    assert built.read_bytes() == before
    bad = CliRunner().invoke(cli, [*base, "--data", str(FIXTURE), "--compare", "before"])
    assert bad.exit_code == 2 and "LABEL=PATH" in bad.output


def test_a_baseline_gets_the_turns_that_come_closest_to_the_methods_tokens() -> None:
    from amem.bench import tokens

    ranked = [[["D1:1"], 39], [["D1:2"], 39], [["D1:3"], 39], [["D1:4"], 400]]  # 10 tokens each line
    assert tokens.prefix(ranked, 10) == (["D1:1"], 10)
    assert tokens.prefix(ranked, 21) == (["D1:1", "D1:2"], 20)  # 20 is closer to 21 than 30
    assert tokens.prefix(ranked, 26) == (["D1:1", "D1:2", "D1:3"], 30)
    assert tokens.prefix(ranked, 10_000)[0] == ["D1:1", "D1:2", "D1:3", "D1:4"]
    assert tokens.prefix([], 50) == ([], 0)
    records = [
        {"method": "amem", "conversation": "c", "qid": 1, "category": 1, "evidence": ["D1:3"],
         "context_tokens": 30, "bare_tokens": 10},
        {"method": "bm25", "conversation": "c", "qid": 1, "category": 1, "evidence": ["D1:3"],
         "ranked": ranked},
    ]  # fmt: skip
    eq = tokens.equal_tokens(records, "amem")
    assert eq is not None
    assert eq["shown"]["bm25"]["recall"]["overall"] == 1.0 and eq["shown"]["bm25"]["tokens"] == 30
    assert eq["content_only"]["bm25"]["recall"]["overall"] == 0.0  # 10 tokens hold one turn
    assert "fusion" not in eq["shown"]  # no fusion records in this run


def test_every_amem_method_is_reported_at_equal_tokens_with_a_curve(tmp_path: Path) -> None:
    base = ["--home", str(tmp_path / "h"), "--llm", "fake", "--embedder", "fake", "bench", "locomo"]
    result = CliRunner().invoke(cli, [*base, "--data", str(FIXTURE), "--methods", "amem", "--name", "t"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "h" / "bench" / "locomo" / "results" / "t"
    summary = json.loads((folder / "summary.json").read_text())
    assert {"bm25", "fusion", "amem"} <= set(summary)  # the baselines come with any amem method
    eq = summary["amem"]["equal_tokens"]
    assert eq["shown"]["tokens"] == summary["amem"]["context_tokens"]
    assert eq["content_only"]["tokens"] < eq["shown"]["tokens"]  # the fake LLM writes a context
    for name in ("bm25", "fusion"):  # more tokens than their own k=10 (up to all of the tiny conversation)
        assert summary[name]["context_tokens"] <= eq["shown"][name]["tokens"] <= eq["shown"]["tokens"] + 30
        assert eq["content_only"][name]["tokens"] <= eq["content_only"]["tokens"] + 30
    curve = summary["amem"]["curve"]
    assert list(curve) == ["1", "2", "3", "5", "7", "10", "15", "20", "30"]
    assert curve["1"]["tokens"] <= curve["30"]["tokens"] and curve["1"]["bare_tokens"] < curve["1"]["tokens"]
    assert "curve" in summary["bm25"] and "equal_tokens" not in summary["bm25"]
    assert "| method | R@10 | tokens shown |" in (folder / "summary.md").read_text()
    assert (folder / "recall_tokens.png").stat().st_size > 1000


def test_field_ablations_empty_one_field_each_and_keep_the_links(tmp_path: Path) -> None:
    from amem.bench.locomo import EvalOptions, run_locomo
    from amem.bench.methods import ABLATIONS, open_memory
    from amem.config import Settings

    settings = Settings.resolve({"home": tmp_path, "llm": "fake", "embedder": "fake"})
    names = ["amem", *ABLATIONS]
    _, summary = run_locomo(tmp_path / "b", settings, FIXTURE, [], names, EvalOptions())
    with open_memory(tmp_path / "b", "amem", settings) as full:
        links = sum(1 for c in ("conv-a", "conv-b") for _ in full.store.iter_links(full.scoped(c).scope))
    for store, fields in ABLATIONS.items():
        with open_memory(tmp_path / "b", store, settings) as memory:
            notes = [n for c in ("conv-a", "conv-b") for n in memory.store.iter_notes(memory.scoped(c).scope)]
            assert notes and all(not getattr(n, f) for n in notes for f in fields), store
            kept = {"keywords", "tags", "context"} - set(fields)
            assert all(any(getattr(n, f) for n in notes) for f in kept), store
            scoped_links = sum(
                1 for c in ("conv-a", "conv-b") for _ in memory.store.iter_links(memory.scoped(c).scope)
            )
            assert scoped_links == links  # same notes, same links: only the fields differ
        assert summary[store]["questions"] == summary["amem"]["questions"]
    assert summary["amem_no_context"]["context_tokens"] < summary["amem"]["context_tokens"]


def test_the_agent_sees_the_lines_the_benchmark_counts() -> None:
    from amem import present
    from amem.bench.locomo import note_line
    from amem.notes import Note

    note = Note(content="Gina: I opened my store!", context="Gina opened her clothing store.")
    assert note_line(note, True) == present.line(note, "full") and "(context: Gina opened" in note_line(
        note, True
    )
    assert note_line(note, False) == present.line(note, "content") and "context" not in note_line(note, False)
    assert present.block([note, note], "content").count("\n") == 1
