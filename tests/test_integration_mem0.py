"""The mem0 dialect of `amem serve`, driven by mem0's own ``MemoryClient`` and ``AsyncMemoryClient`` over
HTTP against a real server on 127.0.0.1 (with and without API keys), and the docs' example."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# before mem0 is imported: its client reports usage to posthog unless this is off (read at import time)
os.environ["MEM0_TELEMETRY"] = "False"
os.environ.setdefault("MEM0_DIR", tempfile.mkdtemp(prefix="amem-mem0-"))  # mem0 writes a config file

mem0 = pytest.importorskip("mem0", reason="pip install 'amem[integrations]'")
import httpx  # noqa: E402
import uvicorn  # noqa: E402
from mem0 import AsyncMemoryClient, MemoryClient  # noqa: E402
from mem0.exceptions import AuthenticationError, MemoryNotFoundError, ValidationError  # noqa: E402
from mem0.exceptions import MemoryError as Mem0Error  # noqa: E402

from amem.server.api import create_app  # noqa: E402
from amem.server.auth import KeyRing  # noqa: E402
from tests.conftest import make_memory  # noqa: E402
from tests.docs_examples import python_blocks  # noqa: E402

ALICE_KEY, BOB_KEY = "alice-key-0123456789", "bob-key-0123456789ab"
LOOPBACK = ["127.0.0.1", "localhost"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(folder: Path, keys: dict[str, str]) -> Iterator[str]:
    """`amem serve` in a thread (uvicorn on a free loopback port); yields the host for mem0's client."""
    memory = make_memory(folder / "m.db")
    app = create_app(memory, KeyRing(keys), trusted_hosts=None if keys else LOOPBACK)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/mem0"
    finally:
        server.should_exit = True
        thread.join(30)
        memory.close()


@pytest.fixture(scope="module")
def open_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(tmp_path_factory.mktemp("open"), {})


@pytest.fixture(scope="module")
def keyed_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(tmp_path_factory.mktemp("keyed"), {ALICE_KEY: "alice", BOB_KEY: "bob"})


def test_telemetry_is_off() -> None:
    from mem0.memory import telemetry

    assert telemetry.MEM0_TELEMETRY is False and telemetry.client_telemetry.posthog is None


def test_round_trip_without_keys(open_host: str) -> None:
    client = MemoryClient(host=open_host, api_key="any-text")
    added = client.add(
        [
            {"role": "system", "content": "You are a helpful cook."},
            {"role": "user", "content": "I'm vegetarian and allergic to peanuts."},
            {"role": "assistant", "content": "Noted: vegetarian, no peanuts."},
        ],
        user_id="maya",
        metadata={"source": "chat"},
    )
    results = added["results"]
    assert [r["event"] for r in results] == ["ADD", "ADD"]  # the system prompt is not a memory
    assert results[0]["memory"] == "I'm vegetarian and allergic to peanuts."
    first = results[0]["id"]
    again = client.add("I'm vegetarian and allergic to peanuts.", user_id="maya")
    assert again["results"] == [{**results[0], "event": "NONE"}]  # already stored: the same note

    found = client.search("peanuts allergy", filters={"user_id": "maya"}, top_k=5)["results"]
    hit = next(r for r in found if r["id"] == first)
    assert hit["user_id"] == "maya" and hit["metadata"] == {"source": "chat", "role": "user"}
    assert isinstance(hit["score"], float) and hit["created_at"] and hit["updated_at"]
    assert client.search("peanuts allergy", filters={"user_id": "someone-else"})["results"] == []
    high = client.search("peanuts allergy", filters={"user_id": "maya"}, threshold=1.01)
    assert high["results"] == []

    assert client.get(first)["memory"] == "I'm vegetarian and allergic to peanuts."
    page = client.get_all(filters={"user_id": "maya"})
    assert page["count"] == 2 and {r["id"] for r in page["results"]} >= {first}
    one = client.get_all(filters={"user_id": "maya"}, page=1, page_size=1)
    assert len(one["results"]) == 1 and one["next"] and one["previous"] is None
    second = httpx.post(one["next"], json={"filters": {"user_id": "maya"}}, headers=_token("x")).json()
    assert second["previous"] and second["next"] is None
    assert {r["id"] for r in one["results"] + second["results"]} == {r["id"] for r in page["results"]}

    updated = client.update(first, text="Maya is vegan and allergic to peanuts.")
    assert updated["memory"] == "Maya is vegan and allergic to peanuts."
    updated = client.update(first, metadata={"checked": True})
    assert updated["metadata"] == {"role": "user", "checked": True}  # amem's role stays
    history = client.history(first)
    assert history[0]["event"] == "ADD" and history[0]["old_memory"] is None
    assert history[0]["new_memory"] == "I'm vegetarian and allergic to peanuts."
    change = next(h for h in history if h["new_memory"].startswith("Maya is vegan"))
    assert change["event"] == "UPDATE" and change["old_memory"] == "I'm vegetarian and allergic to peanuts."
    assert all(h["memory_id"] == first for h in history)

    assert client.delete(first)["message"]
    with pytest.raises(MemoryNotFoundError):
        client.get(first)
    with pytest.raises(ValidationError, match="will not delete every memory"):
        client.delete_all()
    client.add("Maya runs on Sundays.", user_id="maya", agent_id="coach")
    client.add("Tom swims.", user_id="tom")
    assert client.delete_all(user_id="maya")["deleted"] == 2
    assert client.get_all(filters={"user_id": "maya"})["count"] == 0
    assert client.get_all(filters={"user_id": "tom"})["count"] == 1


def _token(key: str) -> dict[str, str]:
    return {"Authorization": f"Token {key}"}


def test_each_key_sees_only_its_users_memories(keyed_host: str) -> None:
    with pytest.raises(ValueError, match="unknown API key"):
        MemoryClient(host=keyed_host, api_key="not-a-key-of-this-server")
    alice = MemoryClient(host=keyed_host, api_key=ALICE_KEY)
    bob = MemoryClient(host=keyed_host, api_key=BOB_KEY)

    secret = alice.add("Alice's door code is 4711.")["results"][0]["id"]  # no user_id: the key's user
    assert alice.get(secret)["user_id"] == "alice"
    alice.add("Alice takes the train.", user_id="alice", agent_id="travel")
    bob.add("Bob takes the bus.")

    for attempt in (bob.get, bob.history, bob.delete):
        with pytest.raises(MemoryNotFoundError):  # exactly as a missing note
            attempt(secret)
    with pytest.raises(MemoryNotFoundError):
        bob.update(secret, text="Bob owns the code now.")
    with pytest.raises(AuthenticationError, match="another user"):
        bob.search("door code", filters={"user_id": "alice"})
    with pytest.raises(AuthenticationError, match="another user"):
        bob.add("sneaky", user_id="alice")
    seen = bob.search("door code train", filters={"user_id": "bob"})["results"]
    assert [r["memory"] for r in seen] == ["Bob takes the bus."]
    assert all("bm25" not in r["amem"]["why"] for r in seen)  # no term statistics across tenants
    assert {r["memory"] for r in alice.get_all()["results"]} == {
        "Alice's door code is 4711.",
        "Alice takes the train.",
    }
    assert alice.get_all(filters={"agent_id": "travel"})["count"] == 1

    assert bob.delete_all()["deleted"] == 1  # all of bob's, nothing of alice's
    assert alice.get_all()["count"] == 2
    assert httpx.get(f"{keyed_host}/v1/memories/{secret}/").status_code == 401
    bearer = {"Authorization": f"Bearer {ALICE_KEY}"}
    assert httpx.get(f"{keyed_host}/v1/memories/{secret}/", headers=bearer).json()["id"] == secret
    as_bob = {"Authorization": f"Token {BOB_KEY}"}  # naming another user is refused, as in amem's API
    refused = httpx.get(f"{keyed_host}/v1/memories/{secret}/", params={"user_id": "alice"}, headers=as_bob)
    assert refused.status_code == 403
    assert alice.delete_users(user_id="alice")["message"]
    assert alice.get_all()["count"] == 0


@pytest.mark.anyio
async def test_the_async_client_and_agent_frameworks_calls(open_host: str) -> None:
    """The calls Agent Framework's Mem0ContextProvider makes through AsyncMemoryClient: after a run, the
    turn with user_id and the application in filters (app_id); before the next, a search per entity."""
    async with AsyncMemoryClient(host=open_host, api_key="any-text") as client:
        turn = [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "My favourite colour is teal."},
            {"role": "assistant", "content": "Teal it is."},
        ]
        added = await client.add(messages=turn, user_id="ada", filters={"app_id": "paint-shop"})
        assert [r["event"] for r in added["results"]] == ["ADD", "ADD"]
        await client.add("Ada paints on weekends.", user_id="ada")  # not in the app

        found = await client.search("favourite colour", filters={"user_id": "ada", "app_id": "paint-shop"})
        texts = [r["memory"] for r in found["results"]]
        assert "My favourite colour is teal." in texts and "Ada paints on weekends." not in texts
        assert all(r["metadata"]["app_id"] == "paint-shop" for r in found["results"])
        everything = await client.get_all(filters={"AND": [{"user_id": "ada"}, {"run_id": "*"}]})
        assert everything["count"] == 3
        first = added["results"][0]["id"]
        assert (await client.get(first))["memory"] == "My favourite colour is teal."
        assert (await client.history(first))[0]["event"] == "ADD"
        await client.delete(first)
        assert (await client.delete_all(user_id="ada"))["deleted"] == 2


def test_filters_times_and_batches(open_host: str) -> None:
    client = MemoryClient(host=open_host, api_key="any-text")
    old = client.add("Lee moved to Oslo.", user_id="lee", timestamp=1_700_000_000, metadata={"topic": "home"})
    new = client.add("Lee started a new job.", user_id="lee", expiration_date="2999-12-31")
    old_id, new_id = old["results"][0]["id"], new["results"][0]["id"]
    assert client.get(old_id)["created_at"].startswith("2023-11-14")
    assert client.get(new_id)["expiration_date"] == "2999-12-31"

    def ids(**kwargs: Any) -> set[str]:
        return {r["id"] for r in client.get_all(**kwargs)["results"]}

    lee = {"user_id": "lee"}
    assert ids(filters={**lee, "created_at": {"lt": "2024-01-01"}}) == {old_id}
    assert ids(filters={"AND": [lee, {"created_at": {"gte": "2024-01-01"}}]}) == {new_id}
    assert ids(filters=lee, start_date="2023-11-14", end_date="2023-11-14") == {old_id}
    assert ids(filters={**lee, "metadata": {"topic": "home"}}) == {old_id}
    for bad, word in (
        ({"OR": [lee, {"user_id": "kim"}]}, "OR"),
        ({**lee, "categories": {"in": ["travel"]}}, "categories"),
        ({"user_id": {"in": ["lee", "kim"]}}, "operators"),
    ):
        with pytest.raises(ValidationError, match=word):
            client.get_all(filters=bad)
    with pytest.raises(ValidationError, match="expiration date"):
        client.update(old_id, expiration_date="2030-01-01")

    edits = [{"memory_id": old_id, "text": "Lee lives in Oslo."}, {"memory_id": new_id, "metadata": {"k": 1}}]
    assert "updated 2" in client.batch_update(edits)["message"]
    assert client.get(old_id)["memory"] == "Lee lives in Oslo."
    with pytest.raises(MemoryNotFoundError):  # one unknown id: nothing is deleted
        client.batch_delete([{"memory_id": old_id}, {"memory_id": "0" * 32}])
    assert client.get(old_id)
    assert "deleted 2" in client.batch_delete([{"memory_id": old_id}, {"memory_id": new_id}])["message"]

    # async_mode false waits for amem's enrichment; true answers once the note is stored (searchable)
    waited = client.add("Lee collects stamps.", user_id="lee", async_mode=False)["results"][0]["id"]
    assert client.get(waited)["amem"]["state"] == "enriched" and client.get(waited)["amem"]["keywords"]
    queued = client.add("Lee bakes bread.", user_id="lee", async_mode=True)["results"][0]["id"]
    assert queued in {r["id"] for r in client.search("bakes bread", filters={"user_id": "lee"})["results"]}
    client.update(waited, timestamp="2020-05-01T10:00:00Z")
    assert client.get(waited)["created_at"].startswith("2020-05-01T10:00:00")
    parts = [{"type": "text", "text": "Lee's cat is Miso."}]
    assert client.add([{"role": "user", "content": parts}], user_id="lee")["results"][0]["event"] == "ADD"
    with pytest.raises(ValidationError, match="image_url"):
        client.add([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    malformed = httpx.post(f"{open_host}/v3/memories/search/", json={"top_k": 2})  # mem0's error shape
    assert malformed.status_code == 422 and "query" in malformed.json()["detail"]

    # mem0's v1/v2 routes, as older clients call them
    base, auth = open_host, _token("x")
    v1 = httpx.post(f"{base}/v1/memories/", json={"messages": "Kim reads.", "user_id": "kim"}, headers=auth)
    assert v1.json()["results"][0]["event"] == "ADD"
    v2 = httpx.post(f"{base}/v2/memories/search/", json={"query": "reads", "filters": {"user_id": "kim"}})
    assert [r["memory"] for r in v2.json()["results"]] == ["Kim reads."]
    listed = httpx.get(f"{base}/v1/memories/", params={"user_id": "kim"}).json()
    assert listed["count"] == 1
    assert client.delete_all(filters={"user_id": "kim"})["deleted"] == 1  # sent as the dict's repr

    # filters amem cannot read are a 400 in mem0's shape, never a crash
    for bad in ("[" * 1000, "{[1]: 2}", "{'user_id': 'kim'" + " " * 5000 + "}"):
        refused = httpx.get(f"{base}/v1/memories/", params={"filters": bad})
        assert refused.status_code == 400 and "filters" in refused.json()["detail"]


def test_what_amem_does_not_serve_is_a_clear_error(open_host: str) -> None:
    client = MemoryClient(host=open_host, api_key="any-text")
    note = client.add("Noor likes tea.", user_id="noor")["results"][0]["id"]
    for call in (
        lambda: client.feedback(note, "POSITIVE"),
        lambda: client.users(),
        lambda: client.create_memory_export("{}", filters={"user_id": "noor"}),
        lambda: client.get_summary({"user_id": "noor"}),
        lambda: client.get_profile("noor"),
        lambda: client.delete(note, delete_linked=True),
        lambda: client.project.get(),
    ):
        with pytest.raises(Mem0Error) as failure:
            call()
        assert failure.value.debug_info["status_code"] == 501 and "amem" in failure.value.message
    response = httpx.get(f"{open_host}/v1/event/123/")
    assert response.status_code == 501 and "no events" in response.json()["detail"]
    assert client.get(note)  # nothing was changed on the way


def test_docs_example_runs(open_host: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("AMEM_MEM0_HOST", open_host)
    (example,) = python_blocks("integrations/mem0.md")
    exec(compile(example, "docs/integrations/mem0.md", "exec"), {})
    assert "allergic to peanuts" in capsys.readouterr().out


AUDIT = r"""
import json, os, socket, sys, threading, time

seen = []

def hook(event, args):
    if event == "socket.connect" and not isinstance(args[1], (str, bytes)):
        seen.append(f"connect {args[1][0]}")
    elif event == "socket.getaddrinfo":
        seen.append(f"resolve {args[0]}")

sys.addaudithook(hook)
import uvicorn
from mem0 import AsyncMemoryClient, MemoryClient
import anyio
from amem.server.api import create_app
from tests.conftest import make_memory

memory = make_memory(sys.argv[1])
port = int(sys.argv[2])
server = uvicorn.Server(uvicorn.Config(create_app(memory), host="127.0.0.1", port=port, log_level="warning"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.02)
host = f"http://127.0.0.1:{port}/mem0"
client = MemoryClient(host=host, api_key="local")
note = client.add("Sam likes chess.", user_id="sam")["results"][0]["id"]
client.search("chess", filters={"user_id": "sam"})
client.update(note, text="Sam loves chess.")
client.history(note)
client.delete_all(user_id="sam")

async def main():
    async with AsyncMemoryClient(host=host, api_key="local") as c:
        await c.add("Sam plays on Fridays.", user_id="sam")
        await c.search("chess", filters={"user_id": "sam"})

anyio.run(main)
server.should_exit = True
print(json.dumps(seen))
"""


def test_no_connection_leaves_the_machine(tmp_path: Path) -> None:
    """A whole session in a fresh process with an audit hook: every socket goes to 127.0.0.1 (posthog off)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEM_") or k.startswith("AMEM_TEST_")}
    env |= {"MEM0_TELEMETRY": "False", "MEM0_DIR": str(tmp_path / "mem0"), "AMEM_HOME": str(tmp_path)}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", AUDIT, str(tmp_path / "m.db"), str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    attempts = json.loads(done.stdout.strip().splitlines()[-1])
    assert attempts and set(attempts) <= {"connect 127.0.0.1", "resolve 127.0.0.1"}, attempts
