"""The REST API's upkeep routes (pin, archive, unarchive, restore, links, consolidate and its undo), the
scheduled consolidation of `amem serve`, against the real app (SQLite store, fake models)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="pip install 'amem[server]'")
from fastapi.testclient import TestClient

from amem import Memory, NoteStatus
from amem.server.api import create_app
from amem.server.auth import KeyRing, parse_keys
from amem.server.jobs import Every, Job, Jobs
from tests.conftest import make_memory
from tests.test_api import ALICE, BOB, auth

FAR = "2100-01-01T00:00:00Z"
MISSING = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memory]:
    m = make_memory(tmp_path / "api.db")
    yield m
    m.close()


@pytest.fixture
def client(mem: Memory) -> Iterator[TestClient]:
    app = create_app(mem, KeyRing(parse_keys(f"{ALICE}:alice,{BOB}:bob")))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def add(client: TestClient, key: str, content: str, status: int = 201, **extra: Any) -> dict[str, Any]:
    r = client.post("/v1/notes", json={"content": content, **extra}, headers=auth(key))
    assert r.status_code == status, r.text
    return r.json()  # type: ignore[no-any-return]


def post(client: TestClient, key: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(path, json=body or {}, headers=auth(key))


def error(r: Any, status: int, kind: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["type"] == kind, body
    return str(body["error"]["message"])


def job_result(client: TestClient, key: str, r: Any) -> dict[str, Any]:
    """Wait for the job a 202 answer started; its result (the job must succeed)."""
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(r.headers["location"], headers=auth(key)).json()
        if job["state"] in ("done", "failed"):
            assert job["state"] == "done", job
            return job["result"]  # type: ignore[no-any-return]
        time.sleep(0.02)
    raise AssertionError("the job did not finish")


def status_of(client: TestClient, key: str, note_id: str) -> str:
    return str(client.get(f"/v1/notes/{note_id}", headers=auth(key)).json()["status"])


# -- notes carry the upkeep fields -----------------------------------------------------------------


def test_add_takes_pinned_and_expires_at_and_a_duplicate_answers_200(client: TestClient) -> None:
    expires = (datetime.now(timezone.utc) + timedelta(days=2)).replace(microsecond=0)
    note = add(client, ALICE, "The door code is 4471", pinned=True, expires_at=expires.isoformat())
    assert note["pinned"] is True and datetime.fromisoformat(note["expires_at"]) == expires
    assert note["status"] == "active" and note["sources"] == [] and note["retrievals"] == 0
    assert note["superseded_by"] is None and note["merged_into"] is None
    again = add(client, ALICE, "the door code is 4471", status=200, metadata={"src": "sms"})
    assert again["id"] == note["id"] and [s["metadata"] for s in again["sources"]] == [{"src": "sms"}]
    assert add(client, BOB, "The door code is 4471")["id"] != note["id"]  # another user's memory
    history = client.get(f"/v1/notes/{note['id']}/history", headers=auth(ALICE)).json()
    assert history[-1]["cause"] == "duplicate" and history[-1]["batch"] is None


# -- pin, archive, unarchive, restore --------------------------------------------------------------


def test_pin_archive_unarchive_restore(client: TestClient) -> None:
    nid = add(client, ALICE, "Maya keeps her passport in the blue folder")["id"]
    base = f"/v1/notes/{nid}"
    r = client.post(f"{base}/pin", headers=auth(ALICE))  # no body: pin
    assert r.status_code == 200 and r.json()["pinned"] is True
    assert "pinned" in error(post(client, ALICE, f"{base}/archive"), 400, "invalid_input")
    assert post(client, ALICE, f"{base}/pin", {"pinned": False}).json()["pinned"] is False

    r = post(client, ALICE, f"{base}/archive")
    assert r.status_code == 200 and r.json()["status"] == "archived"
    query = {"query": "passport blue folder"}
    assert client.post("/v1/search", json=query, headers=auth(ALICE)).json()["hits"] == []
    found = client.post("/v1/search", json={**query, "include_archived": True}, headers=auth(ALICE)).json()
    assert [h["note"]["id"] for h in found["hits"]] == [nid]
    page = client.get("/v1/notes?status=archived", headers=auth(ALICE)).json()
    assert page["total"] == 1 and page["notes"][0]["id"] == nid
    assert client.get("/v1/notes?status=active", headers=auth(ALICE)).json()["total"] == 0

    assert post(client, ALICE, f"{base}/unarchive").json()["status"] == "active"
    post(client, ALICE, f"{base}/archive")
    restored = post(client, ALICE, f"{base}/restore", {"version": 1}).json()
    assert restored["status"] == "active" and restored["pinned"] is False and restored["version"] == 7
    causes = [v["cause"] for v in client.get(f"{base}/history", headers=auth(ALICE)).json()]
    assert causes == ["create", "pin", "pin", "archive", "unarchive", "archive", "restore"]
    assert "no version 99" in error(post(client, ALICE, f"{base}/restore", {"version": 99}), 404, "not_found")
    error(post(client, ALICE, f"{base}/restore", {"version": 0}), 422, "invalid_request")
    error(post(client, ALICE, f"{base}/restore"), 422, "invalid_request")


@pytest.mark.parametrize(
    ("path", "body"),
    [("pin", {"pinned": True}), ("archive", None), ("unarchive", None), ("restore", {"version": 1})],
)
def test_per_note_upkeep_routes_answer_404_for_unknown_and_foreign_notes(
    client: TestClient, path: str, body: dict[str, Any] | None
) -> None:
    error(post(client, ALICE, f"/v1/notes/{MISSING}/{path}", body), 404, "not_found")
    theirs = add(client, BOB, "Bob's private note")
    message = error(post(client, ALICE, f"/v1/notes/{theirs['id']}/{path}", body), 404, "not_found")
    assert "no note" in message
    after = client.get(f"/v1/notes/{theirs['id']}", headers=auth(BOB)).json()
    assert after["version"] == theirs["version"]  # untouched


# -- links -----------------------------------------------------------------------------------------


def test_links_by_hand(client: TestClient) -> None:
    a = add(client, ALICE, "the old fishing boat")
    b = add(client, ALICE, "repairing the boat engine")
    r = post(client, ALICE, "/v1/links", {"source_id": a["id"], "target_id": b["id"], "reason": "same boat"})
    assert r.status_code == 201, r.text
    assert (r.json()["source_id"], r.json()["target_id"], r.json()["weight"]) == (a["id"], b["id"], 1.0)
    found = client.get(f"/v1/notes/{a['id']}/links", headers=auth(ALICE)).json()
    assert any(lk["target_id"] == b["id"] and lk["reason"] == "same boat" for lk in found)

    body = {"source_id": a["id"], "target_id": MISSING}
    error(post(client, ALICE, "/v1/links", body), 404, "not_found")
    theirs = add(client, BOB, "Bob's boat")
    error(
        post(client, ALICE, "/v1/links", {"source_id": a["id"], "target_id": theirs["id"]}), 404, "not_found"
    )
    error(post(client, BOB, "/v1/links", {"source_id": theirs["id"], "target_id": a["id"]}), 404, "not_found")
    bad = {"source_id": a["id"], "target_id": b["id"], "weight": 0}
    assert "weight" in error(post(client, ALICE, "/v1/links", bad), 400, "invalid_input")
    error(post(client, ALICE, "/v1/links", {"source_id": a["id"]}), 422, "invalid_request")


# -- consolidation ---------------------------------------------------------------------------------


def test_consolidate_dry_run_then_real_run_then_undo(client: TestClient) -> None:
    room = add(client, ALICE, "The meeting room is B12 today", expires_at="2030-01-01T00:00:00Z")
    folder = add(client, ALICE, "The passport is in the blue folder", pinned=True)
    bobs = add(client, BOB, "Bob: the room is C3 today", expires_at="2030-01-01T00:00:00Z")

    dry = job_result(client, ALICE, post(client, ALICE, "/v1/consolidate", {"dry_run": True, "as_of": FAR}))
    assert dry["dry_run"] is True and dry["as_of"].startswith("2100-01-01")
    archived = {c["note_id"] for c in dry["changes"] if c["kind"] == "archive"}
    assert archived == {room["id"]}  # pinned note kept; Bob's note is not in Alice's scope
    assert status_of(client, ALICE, room["id"]) == "active"
    history = client.get(f"/v1/notes/{room['id']}/history", headers=auth(ALICE)).json()
    assert [v["cause"] for v in history] == ["create"]  # a dry run writes nothing

    report = job_result(client, ALICE, post(client, ALICE, "/v1/consolidate", {"as_of": FAR}))
    assert report["dry_run"] is False and report["run_id"].startswith("c-")
    assert {c["note_id"] for c in report["changes"] if c["kind"] == "archive"} == {room["id"]}
    assert report["notes_before"] == 2 and report["notes_after"] == 1
    assert status_of(client, ALICE, room["id"]) == "archived"
    assert status_of(client, ALICE, folder["id"]) == "active"
    assert status_of(client, BOB, bobs["id"]) == "active"
    last = client.get(f"/v1/notes/{room['id']}/history", headers=auth(ALICE)).json()[-1]
    assert last["cause"] == "archive" and last["batch"] == report["run_id"]

    # another user cannot undo (or even learn of) Alice's run
    body = {"run_id": report["run_id"]}
    error(post(client, BOB, "/v1/consolidate/undo", body), 404, "not_found")
    undone = job_result(client, ALICE, post(client, ALICE, "/v1/consolidate/undo", body))
    assert undone["run_id"] == report["run_id"] and room["id"] in undone["restored"]
    assert undone["skipped"] == []
    assert status_of(client, ALICE, room["id"]) == "active"

    again = job_result(client, ALICE, post(client, ALICE, "/v1/consolidate/undo", body))
    assert again["restored"] == [] and room["id"] in again["skipped"]  # the undo changed it since
    forced = job_result(client, ALICE, post(client, ALICE, "/v1/consolidate/undo", {**body, "force": True}))
    assert room["id"] in forced["restored"]


def test_consolidate_merges_exact_duplicates_and_reports_provenance(mem: Memory) -> None:
    mem.settings = mem.settings.__class__(**{**mem.settings.__dict__, "dedupe": False})
    with TestClient(create_app(mem)) as c:  # no keys: the scope comes from the query
        a = c.post("/v1/notes?user_id=ann", json={"content": "Ann went hiking", "metadata": {"d": 1}}).json()
        b = c.post("/v1/notes?user_id=ann", json={"content": "ann went HIKING", "metadata": {"d": 2}}).json()
        report = job_result(c, ALICE, c.post("/v1/consolidate?user_id=ann", json={"use_llm": False}))
        assert [(x["kind"], x["note_id"], x["other_id"]) for x in report["changes"]] == [
            ("merge", b["id"], a["id"])
        ]
        merged = c.get(f"/v1/notes/{b['id']}").json()
        assert merged["status"] == "merged" and merged["merged_into"] == a["id"]
        survivor = c.get(f"/v1/notes/{a['id']}").json()
        assert [s["note_id"] for s in survivor["sources"]] == [b["id"]]


def test_consolidate_request_mistakes(client: TestClient) -> None:
    error(post(client, ALICE, "/v1/consolidate/undo", {"run_id": "c-nope"}), 404, "not_found")
    error(post(client, ALICE, "/v1/consolidate/undo", {"run_id": "c-\x00"}), 404, "not_found")
    error(post(client, ALICE, "/v1/consolidate/undo", {}), 422, "invalid_request")
    bad_time = {"as_of": "0001-01-01T00:00:00+01:00"}
    r = post(client, ALICE, "/v1/consolidate", bad_time)
    assert r.status_code in (400, 422) and r.json()["error"]["message"], r.text
    error(post(client, ALICE, "/v1/consolidate", {"dry_run": "maybe"}), 422, "invalid_request")
    assert job_result(client, ALICE, client.post("/v1/consolidate", headers=auth(ALICE)))["dry_run"] is False
    error(client.post("/v1/consolidate", json={}), 401, "unauthorized")


def test_openapi_lists_the_upkeep_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("pin", "archive", "unarchive", "restore"):
        assert f"/v1/notes/{{note_id}}/{path}" in paths
    for path in ("/v1/links", "/v1/consolidate", "/v1/consolidate/undo"):
        assert path in paths


# -- scheduled consolidation -----------------------------------------------------------------------


def test_scheduled_consolidation_runs_in_the_job_worker(mem: Memory) -> None:
    past = datetime.now(timezone.utc) - timedelta(minutes=1)
    expired = mem.scoped("ann").add("The meeting room was B12 yesterday", expires_at=past)
    kept = mem.scoped("ann").add("The passport is in the blue folder", pinned=True, expires_at=past)
    app = create_app(mem, consolidate_every_s=0.05)
    with TestClient(app):
        deadline = time.monotonic() + 30
        while mem.get(expired.id).status != NoteStatus.archived:
            assert time.monotonic() < deadline, "the scheduled consolidation did not run"
            time.sleep(0.02)
        job = app.state.scheduled[-1]
        while job.state in ("queued", "running"):
            time.sleep(0.02)
        assert job.kind == "consolidate" and job.owner is None and job.state == "done", job
    assert mem.get(kept.id).status == NoteStatus.active  # pinned
    history = mem.history(expired.id)
    assert history[-1].cause.value == "archive" and history[-1].batch
    assert history[-1].detail.startswith("expired")


def test_no_schedule_by_default(mem: Memory) -> None:
    past = datetime.now(timezone.utc) - timedelta(minutes=1)
    note = mem.add("The meeting room was B12 yesterday", expires_at=past)
    app = create_app(mem)
    with TestClient(app):
        time.sleep(0.2)
    assert app.state.scheduled == [] and mem.get(note.id).status == NoteStatus.active


def test_every_keeps_going_after_a_failure_and_stops_on_close() -> None:
    calls: list[int] = []
    third = threading.Event()

    def action() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first one fails")
        if len(calls) >= 3:
            third.set()

    every = Every(0.01, action)
    every.start()
    assert third.wait(10)
    every.close()
    count = len(calls)
    time.sleep(0.05)
    assert len(calls) == count
    with pytest.raises(ValueError):
        Every(0, action)


@pytest.mark.parametrize(
    ("args", "env", "seconds"),
    [
        ((), {}, 0.0),
        (("--consolidate-every", "6"), {}, 6 * 3600.0),
        ((), {"AMEM_CONSOLIDATE_EVERY": "0.5"}, 1800.0),
    ],
    ids=["off", "option", "env"],
)
def test_serve_passes_the_interval(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    env: dict[str, str],
    seconds: float,
) -> None:
    import uvicorn
    from click.testing import CliRunner

    import amem.server.api as api
    from amem.cli import cli

    seen: dict[str, Any] = {}

    def fake_create_app(memory: Memory, keys: Any = None, **kwargs: Any) -> str:
        seen.update(kwargs)
        return "app"

    monkeypatch.setattr(api, "create_app", fake_create_app)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "--embedder", "fake", "serve", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    assert seen["app"] == "app" and seen["consolidate_every_s"] == seconds
    if seconds:
        assert "consolidating every" in result.output


def test_serve_refuses_a_negative_interval(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from amem.cli import cli

    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "serve", "--consolidate-every", "-1"])
    assert result.exit_code == 2 and "--consolidate-every" in result.output


def test_jobs_of_one_scope_run_in_order_and_scopes_run_side_by_side() -> None:
    jobs = Jobs(workers=2)
    bob_started = threading.Event()
    order: list[str] = []

    def alice_first(_progress: Any) -> dict[str, Any]:
        # finishes only once bob's job has started: two lanes share the two workers
        assert bob_started.wait(10), "bob's job waited behind alice's"
        order.append("alice 1")
        return {}

    def alice_second(_progress: Any) -> dict[str, Any]:
        order.append("alice 2")
        return {}

    def bob(_progress: Any) -> dict[str, Any]:
        bob_started.set()
        return {}

    first = jobs.submit("add_many", "alice", 0, alice_first, lane="alice")
    second = jobs.submit("add_many", "alice", 0, alice_second, lane="alice")
    other = jobs.submit("add_many", "bob", 0, bob, lane="bob")
    _finish(jobs, first, second, other)
    assert [first.state, second.state, other.state] == ["done", "done", "done"]
    assert order == ["alice 1", "alice 2"]


def test_one_worker_runs_every_job_in_the_order_it_came() -> None:
    jobs = Jobs(workers=1)
    order: list[str] = []
    release = threading.Event()

    def step(name: str) -> Any:
        def work(_progress: Any) -> dict[str, Any]:
            if name == "a":
                assert release.wait(10)
            order.append(name)
            return {}

        return work

    submitted = [jobs.submit("enrich", None, 0, step(n), lane=n) for n in "abc"]
    release.set()
    _finish(jobs, *submitted)
    assert order == ["a", "b", "c"]
    assert all(j.state == "done" for j in submitted)


def _finish(jobs: Jobs, *started: Job) -> None:
    """Wait for the jobs to end (close drops queued ones), then close."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(jobs.get(j.id, j.owner).state in ("done", "failed") for j in started):  # type: ignore[union-attr]
            break
        time.sleep(0.01)
    jobs.close()


def test_an_exclusive_job_waits_for_the_jobs_before_it_and_holds_back_the_ones_after() -> None:
    jobs = Jobs(workers=4)
    release = threading.Event()
    events: list[str] = []
    lock = threading.Lock()

    def record(name: str, wait: bool = False) -> Any:
        def work(_progress: Any) -> dict[str, Any]:
            with lock:
                events.append(f"{name} start")
            if wait:
                assert release.wait(10)
            with lock:
                events.append(f"{name} end")
            return {}

        return work

    before = jobs.submit("add_many", "alice", 0, record("batch", wait=True), lane="alice")
    alone = jobs.submit("consolidate", None, 0, record("consolidate"), exclusive=True)
    after = jobs.submit("add_many", "bob", 0, record("later"), lane="bob")
    release.set()
    _finish(jobs, before, alone, after)
    assert events == [
        "batch start",
        "batch end",
        "consolidate start",
        "consolidate end",
        "later start",
        "later end",
    ]
