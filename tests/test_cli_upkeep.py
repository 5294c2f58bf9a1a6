"""The upkeep commands of `amem` (pin, archive, unarchive, restore, link, consolidate and its undo) and the
upkeep options of add/search/list, through click's CliRunner with the fake LLM and embedder."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from amem.cli import main
from tests.test_cli import run, run_json

pytestmark = pytest.mark.usefixtures("fake_models_env")

FAR = "2100-01-01"  # as of then, every unpinned note is long forgotten and every ttl has run out


def add(content: str, *extra: str) -> dict[str, Any]:
    return run_json("add", content, *extra)  # type: ignore[no-any-return]


def fails(*args: str, code: int = 1) -> str:
    """Run a command that must fail; the message it printed."""
    result = run(*args, ok=False)
    assert result.exit_code == code, (args, result.output, result.exception)
    return result.output + (str(result.exception) if code == 1 else "")


def everything() -> list[dict[str, Any]]:
    """What a user sees of every note, without the bookkeeping a restore bumps (version, updated_at)."""
    shown = ("id", "content", "status", "pinned", "merged_into", "superseded_by", "sources", "expires_at")
    return sorted(
        ({k: n[k] for k in shown} for n in run_json("list", "--limit", "100")), key=lambda n: n["id"]
    )


# -- add --pin --ttl -------------------------------------------------------------------------------


def test_add_pin_and_ttl() -> None:
    before = datetime.now(timezone.utc)
    note = add("The door code is 4471 this week", "--pin", "--ttl", "7d")
    assert note["pinned"] is True and note["status"] == "active"
    expires = datetime.fromisoformat(note["expires_at"])
    assert before + timedelta(days=7) <= expires <= datetime.now(timezone.utc) + timedelta(days=7)
    for given, delta in (
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("1.5d", timedelta(hours=36)),
    ):
        expires = datetime.fromisoformat(add(f"note with ttl {given}", "--ttl", given)["expires_at"])
        assert abs(expires - (datetime.now(timezone.utc) + delta)) < timedelta(minutes=1)
    assert add("no ttl here")["expires_at"] is None and add("nor a pin")["pinned"] is False
    shown = run("get", note["id"]).stdout
    assert "pinned" in shown and "expires " in shown


@pytest.mark.parametrize("ttl", ["5y", "0d", "-3h", "abc", "", "12", "1e400d", "99999999999w"])
def test_add_with_a_bad_ttl_is_a_usage_error(ttl: str) -> None:
    message = fails("add", "something to expire", "--ttl", ttl, code=2)
    assert "--ttl" in message
    assert run_json("list") == []  # nothing was stored


def test_an_exact_duplicate_shows_the_existing_note_and_its_sources() -> None:
    first = add("Maya bought a red bike", "--meta", "dia_id=D1:1")
    result = run("add", "maya bought a RED bike", "--meta", "dia_id=D4:2")
    assert f"already remembered as {first['id']}" in result.stdout
    again = add("Maya bought a red bike", "--meta", "dia_id=D4:2")
    assert again["id"] == first["id"] and [s["metadata"] for s in again["sources"]] == [{"dia_id": "D4:2"}]
    shown = run("get", first["id"]).stdout
    assert "sources (1):" in shown and "duplicate" in shown and "dia_id=D4:2" in shown
    assert "1 source folded in" in run("list").stdout
    assert "duplicate" in run("history", first["id"]).stdout


# -- pin, archive, unarchive, restore, link --------------------------------------------------------


def test_pin_archive_unarchive_restore() -> None:
    note = add("Maya keeps her passport in the blue folder")
    nid = note["id"]
    assert run("pin", nid).stdout.startswith(f"pinned {nid}")
    assert run_json("get", nid)["pinned"] is True
    assert "pinned" in fails("archive", nid)  # a pinned note is never archived: unpin first
    assert run_json("pin", nid, "--off")["pinned"] is False

    archived = run_json("archive", nid)
    assert archived["status"] == "archived"
    assert run_json("search", "passport blue folder") == []
    hits = run_json("search", "passport blue folder", "--include-archived")
    assert [h["note"]["id"] for h in hits] == [nid]
    assert "archived" in run("search", "passport blue folder", "--include-archived").stdout
    assert [n["id"] for n in run_json("list", "--status", "archived")] == [nid]
    assert run_json("list", "--status", "active") == []
    assert "archived" in run("list").stdout.splitlines()[0]

    assert run("unarchive", nid).stdout.startswith(f"unarchived {nid}")
    assert run_json("get", nid)["status"] == "active"
    causes = [v["cause"] for v in run_json("history", nid)]
    assert causes == ["create", "pin", "pin", "archive", "unarchive"]

    run("archive", nid)
    restored = run_json("restore", nid, "1")
    assert restored["status"] == "active" and restored["version"] == 7
    assert run_json("history", nid)[-1]["cause"] == "restore"
    assert "no version 99" in fails("restore", nid, "99")
    fails("restore", nid, "0", code=2)


@pytest.mark.parametrize(
    "args",
    [
        ("pin",),
        ("pin", "--off"),
        ("archive",),
        ("unarchive",),
        ("restore", "{id}", "1"),
        ("link", "{id}", "{id}"),
    ],
    ids=["pin", "unpin", "archive", "unarchive", "restore", "link"],
)
def test_upkeep_commands_on_an_unknown_id(args: tuple[str, ...]) -> None:
    missing = "0123456789abcdef0123456789abcdef"
    command = [a.format(id=missing) for a in args]
    if "{id}" not in "".join(args):
        command.append(missing)
    assert "no note" in fails(*command)


def test_link_by_hand() -> None:
    a = run_json("--llm", "none", "add", "the old fishing boat")
    b = run_json("--llm", "none", "add", "repairing the boat engine")
    made = run_json("link", a["id"], b["id"], "--reason", "same boat", "--weight", "0.5")
    assert (made["source_id"], made["target_id"], made["reason"], made["weight"]) == (
        a["id"],
        b["id"],
        "same boat",
        0.5,
    )
    assert [lk["target_id"] for lk in run_json("links", a["id"])] == [b["id"]]
    assert "linked" in run("link", b["id"], a["id"]).stdout
    assert "weight" in fails("link", a["id"], b["id"], "--weight", "0")
    assert "different notes" in fails("link", a["id"], a["id"])
    assert run_json("history", a["id"])[-1]["detail"] == "linked by hand"


# -- consolidate -----------------------------------------------------------------------------------


def _busy(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    monkeypatch.setenv("AMEM_DEDUPE", "0")  # let an exact duplicate in, for consolidation to merge
    return {
        "bike": add("Maya bought a red bike", "--meta", "dia_id=D1:1"),
        "again": add("Maya bought a red bike", "--meta", "dia_id=D2:7"),
        "room": add("The meeting room is B12 today", "--ttl", "1h"),
        "folder": add("The passport is in the blue folder", "--pin"),
    }


def test_dry_run_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    notes = _busy(monkeypatch)
    before = everything()
    history = run_json("history", notes["bike"]["id"])
    report = run_json("consolidate", "--dry-run", "--as-of", FAR)
    assert report["dry_run"] is True and report["as_of"].startswith("2100-01-01")
    kinds = {(c["kind"], c["note_id"]) for c in report["changes"]}
    assert ("merge", notes["again"]["id"]) in kinds and ("archive", notes["room"]["id"]) in kinds
    assert notes["folder"]["id"] not in {c["note_id"] for c in report["changes"] if c["kind"] == "archive"}
    assert everything() == before and run_json("history", notes["bike"]["id"]) == history

    human = run("consolidate", "--dry-run", "--as-of", FAR).stdout
    assert "dry run: nothing was changed" in human and "undo with" not in human
    assert re.search(r"merge\s+" + notes["again"]["id"][:8] + " -> " + notes["bike"]["id"][:8], human)
    assert everything() == before


def test_consolidate_then_undo_through_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    notes = _busy(monkeypatch)
    before = everything()
    out = run("consolidate", "--as-of", FAR).stdout
    run_id = re.search(r"consolidation (c-[0-9a-f]+) as of", out).group(1)  # type: ignore[union-attr]
    assert out.strip().splitlines()[-1] == f"undo with: amem consolidate --undo {run_id}"
    assert "changes: 1 merge" in out and "archive" in out and "notes 4 -> " in out
    assert re.search(r"archive\s+" + notes["room"]["id"][:8] + r"\s+expired at", out)

    merged = run_json("get", notes["again"]["id"])
    assert merged["status"] == "merged" and merged["merged_into"] == notes["bike"]["id"]
    assert run_json("get", notes["room"]["id"])["status"] == "archived"
    assert run_json("get", notes["folder"]["id"])["status"] == "active"
    assert f"merged into {notes['bike']['id'][:8]}" in run("get", notes["again"]["id"]).stdout
    survivor = run("get", notes["bike"]["id"]).stdout
    assert f"merged {notes['again']['id'][:8]}" in survivor and "dia_id=D2:7" in survivor  # provenance
    assert f"in run {run_id}" in run("history", notes["room"]["id"]).stdout
    assert everything() != before

    undone = run("consolidate", "--undo", run_id).stdout
    assert undone.startswith(f"undid {run_id}: restored ") and "skipped" not in undone
    assert everything() == before

    again = run_json("consolidate", "--undo", run_id)  # the notes changed since (the undo itself)
    assert again["restored"] == [] and again["skipped"]
    assert "--force" in run("consolidate", "--undo", run_id).stdout
    forced = run_json("consolidate", "--undo", run_id, "--force")
    assert forced["skipped"] == [] and forced["restored"]
    assert everything() == before  # each note put back at its version from before the run, again


def test_consolidate_undo_of_an_unknown_run() -> None:
    add("anything at all")
    assert "no consolidation run 'c-nope'" in fails("consolidate", "--undo", "c-nope")


@pytest.mark.parametrize(
    "args",
    [("--force",), ("--undo", "c-x", "--dry-run"), ("--undo", "c-x", "--full"), ("--as-of", "soon")],
    ids=["force-alone", "undo-dry-run", "undo-full", "bad-as-of"],
)
def test_consolidate_option_mistakes(args: tuple[str, ...]) -> None:
    code = 1 if "--as-of" in args else 2
    message = fails("consolidate", *args, code=code)
    assert ("ISO 8601" if code == 1 else "--") in message


def test_consolidate_without_llm_counts_near_duplicates_and_merges_none() -> None:
    a = add("Maya: I love my new red bike!")
    b = add("Maya: I love my new red bike!!!")
    report = run_json("consolidate", "--no-llm")
    assert report["unconfirmed"] >= 1 and not [c for c in report["changes"] if c["kind"] == "merge"]
    assert {run_json("get", n["id"])["status"] for n in (a, b)} == {"active"}
    human = run("consolidate", "--no-llm", "--full").stdout
    assert "unconfirmed" in human and "changes: 0 merge" in human
    assert "undo with" not in human  # nothing changed: nothing to undo


def test_consolidate_is_scoped_by_user() -> None:
    mine = run_json("--user", "ann", "add", "Ann: the room is B12 today", "--ttl", "1h")
    theirs = run_json("--user", "ben", "add", "Ben: the room is C3 today", "--ttl", "1h")
    report = run_json("--user", "ann", "consolidate", "--as-of", FAR)
    assert [c["note_id"] for c in report["changes"]] == [mine["id"]]
    assert run_json("get", theirs["id"])["status"] == "active"


def test_main_exit_codes_for_upkeep(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def code_of(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["amem", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, capsys.readouterr().err

    code, err = code_of("add", "x", "--ttl", "soon")
    assert code == 2 and "--ttl" in err
    code, err = code_of("consolidate", "--undo", "c-unknown")
    assert code == 1 and err.startswith("error: no consolidation run")
    code, err = code_of("archive", "nope")
    assert code == 1 and err.startswith("error: no note")


def test_help_lists_the_upkeep_commands() -> None:
    text = run("--help").stdout
    for command in ("consolidate", "pin", "archive", "unarchive", "restore", "link"):
        assert re.search(rf"^\s+{command}\s", text, re.MULTILINE), command
    assert "--undo" in run("consolidate", "--help").stdout
