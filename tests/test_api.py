"""The REST API through an HTTP client against the real app (SQLite store, fake models)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="pip install 'amem[server]'")
from fastapi.testclient import TestClient

from amem import Memory, present
from amem.errors import ConfigError
from amem.notes import Note
from amem.server.api import MAX_BODY_BYTES, create_app
from amem.server.auth import KeyRing, parse_keys
from tests.conftest import make_memory

ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef00"


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memory]:
    m = make_memory(tmp_path / "api.db", link_floor=0.0, evolve_floor=0.0)
    yield m
    m.close()


@pytest.fixture
def client(mem: Memory) -> Iterator[TestClient]:
    app = create_app(mem, KeyRing(parse_keys(f"{ALICE}:alice,{BOB}:bob")))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def add(client: TestClient, key: str, content: str, **extra: Any) -> dict[str, Any]:
    r = client.post("/v1/notes", json={"content": content, **extra}, headers=auth(key))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def error(r: Any, status: int, kind: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["type"] == kind, body
    return str(body["error"]["message"])


def wait_job(client: TestClient, key: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
        if job["state"] in ("done", "failed"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_note_lifecycle_add_get_list_update_history_links_calls_delete(client: TestClient) -> None:
    first = add(
        client, ALICE, "Maya signed up for the Berlin marathon in September", metadata={"src": "chat"}
    )
    second = add(client, ALICE, "Maya started marathon training with a running club")
    assert first["state"] == "enriched" and first["keywords"] and first["context"]
    assert first["user_id"] == "alice" and first["metadata"] == {"src": "chat"}

    got = client.get(f"/v1/notes/{first['id']}", headers=auth(ALICE)).json()
    assert got["content"] == first["content"]
    page = client.get("/v1/notes?limit=1", headers=auth(ALICE)).json()
    assert page["total"] == 2 and [n["id"] for n in page["notes"]] == [second["id"]]

    links = client.get(f"/v1/notes/{second['id']}/links", headers=auth(ALICE)).json()
    assert {(lk["source_id"], lk["target_id"]) for lk in links} == {(second["id"], first["id"])}

    r = client.patch(f"/v1/notes/{first['id']}", json={"tags": ["sport", "running"]}, headers=auth(ALICE))
    assert r.status_code == 200 and r.json()["tags"] == ["sport", "running"]
    history = client.get(f"/v1/notes/{first['id']}/history", headers=auth(ALICE)).json()
    causes = [v["cause"] for v in history]
    assert causes[0] == "create" and causes[-1] == "update" and history[-1]["tags"] == ["sport", "running"]
    calls = client.get(f"/v1/notes/{first['id']}/calls", headers=auth(ALICE)).json()
    assert calls and calls[0]["input_tokens"] > 0 and calls[0]["prompt_version"]

    assert client.delete(f"/v1/notes/{first['id']}", headers=auth(ALICE)).status_code == 204
    error(client.get(f"/v1/notes/{first['id']}", headers=auth(ALICE)), 404, "not_found")


def test_search_returns_hits_with_reasons_and_linked_neighbours(client: TestClient) -> None:
    a = add(client, ALICE, "Maya signed up for the Berlin marathon in September")
    add(client, ALICE, "Maya bought new running shoes for the marathon")
    add(client, ALICE, "The weather in Lisbon was sunny all week")
    r = client.post("/v1/search", json={"query": "Berlin marathon", "k": 1}, headers=auth(ALICE))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hits"][0]["note"]["id"] == a["id"]
    assert len(body["explanations"]) == len(body["hits"]) and "keyword" in body["explanations"][0]
    assert any(h["why"]["via_link_from"] for h in body["hits"][1:])  # a linked neighbour came along
    first = Note.model_validate(body["hits"][0]["note"])
    assert body["text"].splitlines()[0] == present.line(first, "content")  # the default view
    assert first.context and first.context not in body["text"]
    filtered = client.post(
        "/v1/search",
        json={"query": "marathon", "filters": {"after": "2999-01-01T00:00:00Z"}},
        headers=auth(ALICE),
    ).json()
    assert filtered["hits"] == []


def test_batch_add_runs_as_a_job_with_progress(client: TestClient, mem: Memory) -> None:
    items = [{"content": f"turn {i}: Maya talked about her garden and tomatoes"} for i in range(9)]
    r = client.post("/v1/notes/batch", json={"items": items, "batch_size": 4}, headers=auth(ALICE))
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job = wait_job(client, ALICE, r.json()["id"])
    assert job["state"] == "done" and job["done"] == job["total"] == 9
    assert len(job["result"]["note_ids"]) == 9
    assert mem.scoped("alice").count() == 9
    error(client.get(f"/v1/jobs/{job['id']}", headers=auth(BOB)), 404, "not_found")  # not bob's job


def test_a_bad_item_refuses_the_whole_batch_before_anything_is_stored(
    client: TestClient, mem: Memory
) -> None:
    items = [{"content": "fine"}, {"content": "   "}, {"content": "also fine"}]
    message = error(
        client.post("/v1/notes/batch", json={"items": items}, headers=auth(ALICE)), 400, "invalid_input"
    )
    assert "item 2" in message and "empty" in message
    assert mem.count() == 0


def test_enrich_job_finishes_pending_notes(tmp_path: Path) -> None:
    from amem.errors import LLMUnavailable
    from amem.llm.fake import FakeLLM

    llm = FakeLLM(script=[LLMUnavailable("down")])
    m = make_memory(tmp_path / "p.db", llm=llm)
    with TestClient(create_app(m)) as c:
        note = c.post("/v1/notes", json={"content": "Maya adopted a beagle"}).json()
        assert note["state"] == "pending"
        job = c.post("/v1/enrich", json={}).json()
        done = wait_job(c, "", job["id"])
        assert done["state"] == "done" and done["result"]["enriched"] == 1
        assert c.get(f"/v1/notes/{note['id']}").json()["state"] == "enriched"
    m.close()


def test_export_streams_the_scope_as_json_lines(client: TestClient) -> None:
    add(client, ALICE, "Maya signed up for the Berlin marathon")
    add(client, BOB, "Bob plays chess on Sundays")
    r = client.get("/v1/export", headers=auth(ALICE))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in r.text.splitlines()]
    assert records[0]["type"] == "amem-export"
    notes = [rec["data"] for rec in records if rec["type"] == "note"]
    assert [n["user_id"] for n in notes] == ["alice"]


def test_graph_has_the_scope_notes_and_links(client: TestClient) -> None:
    a = add(client, ALICE, "Maya signed up for the Berlin marathon")
    b = add(client, ALICE, "Maya trains for the marathon every morning")
    add(client, BOB, "Bob plays chess")
    g = client.get("/v1/graph", headers=auth(ALICE)).json()
    assert {n["id"] for n in g["nodes"]} == {a["id"], b["id"]} and not g["truncated"]
    assert {(e["source"], e["target"]) for e in g["edges"]} == {(b["id"], a["id"])}
    small = client.get("/v1/graph?limit=1", headers=auth(ALICE)).json()
    assert len(small["nodes"]) == 1 and small["edges"] == [] and small["truncated"]


def test_keys_are_walls_between_users(client: TestClient, mem: Memory) -> None:
    secret = add(client, ALICE, "Alice's bank PIN hint is her dog's birthday")
    nid = secret["id"]
    missing = error(client.get("/v1/notes/0123456789abcdef", headers=auth(BOB)), 404, "not_found")
    for r in (
        client.get(f"/v1/notes/{nid}", headers=auth(BOB)),
        client.get(f"/v1/notes/{nid}/links", headers=auth(BOB)),
        client.get(f"/v1/notes/{nid}/history", headers=auth(BOB)),
        client.get(f"/v1/notes/{nid}/calls", headers=auth(BOB)),
        client.patch(f"/v1/notes/{nid}", json={"context": "pwned"}, headers=auth(BOB)),
        client.delete(f"/v1/notes/{nid}", headers=auth(BOB)),
    ):
        message = error(r, 404, "not_found")
        assert "PIN" not in r.text and message.replace(nid, "X") == missing.replace("0123456789abcdef", "X")
    hits = client.post("/v1/search", json={"query": "bank PIN dog birthday"}, headers=auth(BOB)).json()[
        "hits"
    ]
    assert hits == []
    assert client.get("/v1/notes", headers=auth(BOB)).json()["total"] == 0
    assert client.get("/v1/graph", headers=auth(BOB)).json()["nodes"] == []
    assert client.get("/v1/stats", headers=auth(BOB)).json() == {
        "in_scope": {"scope": {"user_id": "bob"}, "notes": 0, "states": {}, "statuses": {}}
    }
    error(client.get("/v1/notes?user_id=alice", headers=auth(BOB)), 403, "forbidden")
    assert mem.get(nid).context == secret["context"]  # nothing bob sent changed it


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope-not-a-key-at-all"},
        {"Authorization": f"Basic {ALICE}"},
        {"Authorization": "Bearer"},
    ],
)
def test_requests_without_a_valid_key_get_401(client: TestClient, headers: dict[str, str]) -> None:
    r = client.get("/v1/notes", headers=headers)
    error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"


def test_health_needs_no_key_and_tells_nothing_about_notes(client: TestClient) -> None:
    add(client, ALICE, "something private")
    body = client.get("/v1/health").json()
    assert body["status"] == "ok" and body["auth"] is True and "notes" not in body


def test_keys_never_reach_the_log(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    add(client, ALICE, "hello")
    client.get("/v1/notes", headers=auth(ALICE + "x"))
    client.get("/v1/notes/nope", headers=auth(ALICE))
    assert ALICE not in caplog.text


def test_key_configuration_errors_name_the_entry_not_the_key() -> None:
    with pytest.raises(ConfigError, match="entry 2") as info:
        parse_keys(f"{ALICE}:alice,tiny-secret:bob")
    assert "tiny-secret" not in str(info.value)
    with pytest.raises(ConfigError, match="KEY:USER"):
        parse_keys("justakeywithoutauser0123")
    with pytest.raises(ConfigError, match="repeats"):
        parse_keys(f"{ALICE}:alice,{ALICE}:bob")
    ring = KeyRing(parse_keys(f" {ALICE}:alice , {BOB}:bob "))
    assert (
        ring.user_for(ALICE) == "alice" and ring.user_for(BOB) == "bob" and ring.user_for(ALICE[:-1]) is None
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "kind"),
    [
        ("post", "/v1/notes", {"content": ""}, 400, "invalid_input"),
        ("post", "/v1/notes", {"content": "   \n "}, 400, "invalid_input"),
        ("post", "/v1/notes", {"content": "x" * 20_001}, 400, "invalid_input"),
        ("post", "/v1/notes", {"content": "a\x00b"}, 400, "invalid_input"),
        ("post", "/v1/notes", {"content": "ok", "metadata": {"bad key!": 1}}, 400, "invalid_input"),
        ("post", "/v1/notes", {"content": "ok", "event_time": "yesterday-ish"}, 422, "invalid_request"),
        ("post", "/v1/notes", {}, 422, "invalid_request"),
        ("post", "/v1/notes", {"content": 5}, 422, "invalid_request"),
        ("post", "/v1/notes/batch", {"items": []}, 422, "invalid_request"),
        ("post", "/v1/search", {"query": ""}, 400, "invalid_input"),
        ("post", "/v1/search", {"query": "x", "k": 0}, 422, "invalid_request"),
        ("post", "/v1/search", {"query": "x", "preset": "magic"}, 422, "invalid_request"),
        ("post", "/v1/search", {"query": "x", "filters": {"metadata": {"a b": 1}}}, 400, "invalid_input"),
        ("post", "/v1/search", {"query": "x", "filters": {"states": ["sleepy"]}}, 422, "invalid_request"),
        ("get", "/v1/notes?limit=0", None, 422, "invalid_request"),
        ("get", "/v1/notes?state=sleepy", None, 422, "invalid_request"),
        ("get", "/v1/notes/not-an-id", None, 404, "not_found"),
        ("get", "/v1/jobs/not-a-job", None, 404, "not_found"),
        ("get", "/v1/graph?limit=999999", None, 422, "invalid_request"),
        ("patch", "/v1/notes/not-an-id", {"context": "x"}, 404, "not_found"),
        ("delete", "/v1/notes/not-an-id", None, 404, "not_found"),
        ("get", "/v1/nowhere", None, 404, "not_found"),
        ("put", "/v1/notes", None, 405, "method_not_allowed"),
    ],
)
def test_client_mistakes_get_clear_4xx_json_errors(
    client: TestClient, method: str, path: str, body: Any, status: int, kind: str
) -> None:
    r = client.request(method, path, json=body, headers=auth(ALICE))
    assert error(r, status, kind)


def test_bad_json_and_empty_updates_are_4xx(client: TestClient) -> None:
    r = client.post(
        "/v1/notes", content=b"{not json", headers={**auth(ALICE), "content-type": "application/json"}
    )
    error(r, 422, "invalid_request")
    nid = add(client, ALICE, "Maya likes tea")["id"]
    error(client.patch(f"/v1/notes/{nid}", json={}, headers=auth(ALICE)), 400, "invalid_input")


def test_oversized_bodies_get_413_announced_or_not(client: TestClient, mem: Memory) -> None:
    big = b'{"content": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    r = client.post("/v1/notes", content=big, headers={**auth(ALICE), "content-type": "application/json"})
    error(r, 413, "too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
        yield b'{"content": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    r = client.post(
        "/v1/notes", content=chunks(), headers={**auth(ALICE), "content-type": "application/json"}
    )
    error(r, 413, "too_large")
    assert mem.count() == 0


def test_without_keys_the_scope_comes_from_the_query(mem: Memory) -> None:
    with TestClient(create_app(mem)) as c:
        c.post("/v1/notes?user_id=ann", json={"content": "Ann likes kayaking"})
        c.post("/v1/notes?user_id=ben", json={"content": "Ben likes chess"})
        assert c.get("/v1/notes?user_id=ann").json()["total"] == 1
        assert c.get("/v1/notes").json()["total"] == 2  # no user given: every user's notes
        assert "notes" in c.get("/v1/stats").json()


def test_openapi_schema_lists_every_endpoint(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/notes",
        "/v1/notes/batch",
        "/v1/notes/{note_id}",
        "/v1/notes/{note_id}/links",
        "/v1/notes/{note_id}/history",
        "/v1/search",
        "/v1/enrich",
        "/v1/export",
        "/v1/jobs/{job_id}",
        "/v1/graph",
        "/v1/health",
    ):
        assert path in paths, path


def test_amem_serve_starts_with_embedded_defaults_and_no_configuration(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEM_")}
    env["HOME"] = str(tmp_path)  # ~/.amem under a fresh home: no config file, no memory yet
    proc = subprocess.Popen(
        [sys.executable, "-m", "amem", "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/v1/health", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()  # type: ignore[union-attr]
                time.sleep(0.2)
        assert health == {"status": "ok", "version": health["version"], "auth": False}
        assert "force-graph.min.js" in httpx.get(f"{url}/").text
        assert httpx.get(f"{url}/static/vendor/force-graph.min.js").status_code == 200
        assert httpx.get(f"{url}/static/../memory.py").status_code == 404
        # a search runs the real embedded MiniLM on the empty default memory
        r = httpx.post(f"{url}/v1/search", json={"query": "anything"}, timeout=120)
        assert r.status_code == 200 and r.json()["hits"] == []
        assert (tmp_path / ".amem" / "memory.db").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from amem.cli import cli

    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "serve", "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "AMEM_API_KEYS" in str(result.exception)


def test_a_database_outage_is_503_and_a_concurrent_edit_409(
    client: TestClient, mem: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amem.errors import StoreError, StoreUnavailable

    nid = add(client, ALICE, "Maya likes tea")["id"]

    def down(*_: object) -> None:
        raise StoreUnavailable("PostgreSQL at postgresql://db/amem is unavailable; retry when it is back")

    monkeypatch.setattr(mem.store, "get_note", down)
    message = error(client.get(f"/v1/notes/{nid}", headers=auth(ALICE)), 503, "store_unavailable")
    assert "retry" in message

    def raced(*_: object) -> None:
        raise StoreError(f"note {nid} changed while it was being updated; read it again and retry")

    monkeypatch.setattr(mem.store, "get_note", raced)
    error(client.get(f"/v1/notes/{nid}", headers=auth(ALICE)), 409, "store_conflict")


@pytest.mark.parametrize(
    "path", ["/static//etc/passwd", "/static/%2Fetc%2Fpasswd", "/static/../pyproject.toml"]
)
def test_static_files_are_only_the_page_s_own(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404 and "root:" not in r.text
    assert client.get("/static/app.js").status_code == 200


def test_with_keys_keyword_scores_are_hidden(client: TestClient, mem: Memory) -> None:
    add(client, ALICE, "Maya signed up for the Berlin marathon")
    body = client.post("/v1/search", json={"query": "Berlin marathon"}, headers=auth(ALICE)).json()
    why = body["hits"][0]["why"]
    assert why["keyword_rank"] == 1 and why["keyword_score"] is None and "bm25" not in body["explanations"][0]
    with TestClient(create_app(mem)) as open_client:  # no keys: one user's server, scores shown
        body = open_client.post("/v1/search", json={"query": "Berlin marathon"}).json()
        assert body["hits"][0]["why"]["keyword_score"] > 0


def test_trusted_hosts_refuse_a_rebound_name(mem: Memory) -> None:
    app = create_app(mem, trusted_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://attacker.example") as c:
        assert c.get("/v1/notes").status_code == 400
    with TestClient(app, base_url="http://127.0.0.1:8420") as c:
        assert c.get("/v1/notes").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/v1/notes", b'{"content": "x", "event_time": "0001-01-01T00:00:00+01:00"}'),
        ("post", "/v1/search", b'{"query": "x", "filters": {"after": "9999-12-31T23:30:00-01:00"}}'),
        ("post", "/v1/search", b'{"query": "x", "filters": {"metadata": {"a": 100000000000000000000}}}'),
        ("post", "/v1/search", b'{"query": "x", "filters": {"metadata": {"a": NaN}}}'),
        ("get", "/v1/graph?after=0001-01-01T00:00:00%2B01:00", None),
    ],
)
def test_edge_values_are_400_not_500(client: TestClient, method: str, path: str, body: bytes | None) -> None:
    headers = {**auth(ALICE), "content-type": "application/json"}
    r = client.request(method, path, content=body, headers=headers)
    assert r.status_code in (400, 422), r.text
    assert r.json()["error"]["message"]


def test_a_nul_in_an_id_is_404(client: TestClient) -> None:
    error(client.get("/v1/notes/a%00b", headers=auth(ALICE)), 404, "not_found")


def test_links_never_show_another_scope(mem: Memory) -> None:
    from amem.notes import Link

    a = mem.scoped("alice").add("Alice's note")
    b = mem.scoped("bob").add("Bob's note")
    mem.store.upsert_links([Link(source_id=a.id, target_id=b.id, reason="imported from elsewhere")])
    assert mem.scoped("alice").links(a.id) == []
    assert len(mem.links(a.id)) == 1  # a view without a user sees both ends


def test_add_with_wait_false_answers_before_enrichment_and_the_note_finishes(
    client: TestClient, mem: Memory
) -> None:
    r = client.post(
        "/v1/notes?wait=false",
        json={"content": "Maya: my new bike is a green gravel bike"},
        headers=auth(ALICE),
    )
    assert r.status_code == 201, r.text
    note = r.json()
    assert note["state"] == "pending" and note["context"] == ""  # stored, not yet described
    assert mem.background.wait(10)
    done = client.get(f"/v1/notes/{note['id']}", headers=auth(ALICE)).json()
    assert done["state"] == "enriched" and done["context"]
    error(client.get(f"/v1/notes/{note['id']}", headers=auth(BOB)), 404, "not_found")
