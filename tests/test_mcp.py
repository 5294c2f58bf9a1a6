"""`amem mcp` as a subprocess, driven by the MCP SDK's own clients over stdio and streamable HTTP."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp", reason="pip install 'amem[server]'")
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

DOCS = Path(__file__).resolve().parents[1] / "docs" / "mcp.md"

#: what each tool tells a client (MCP annotations): title, readOnly, destructive, idempotent;
#: openWorld is false for all (they touch only amem's own store and transfer folder)
HINTS = {
    "remember": ("Remember", False, False, True),
    "search_memory": ("Search memory", True, False, True),
    "get_memory": ("Get a memory", True, False, True),
    "update_memory": ("Update a memory", False, True, False),
    "delete_memory": ("Delete a memory", False, True, True),
    "memory_history": ("Memory history", True, False, True),
    "export_memories": ("Export memories", False, True, True),
    "import_memories": ("Import memories", False, False, True),
}
TOOLS = set(HINTS)


def server_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEM_") or k.startswith("AMEM_TEST_")}
    return {**env, "AMEM_HOME": str(home), "AMEM_LLM": "fake", "AMEM_EMBEDDER": "fake"}


def structured(result: Any) -> Any:
    assert not result.is_error, [c.text for c in result.content]
    return result.structured_content


async def check_tools(session: ClientSession) -> None:
    """The tools as a client lists them: described for an LLM caller, with a title and every hint."""
    await session.initialize()
    tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():  # written for an LLM caller: every tool and parameter is described
        assert tool.description and len(tool.description) > 40
        for name, prop in tool.input_schema["properties"].items():
            assert prop.get("description"), (tool.name, name)
        hints = tool.annotations
        assert hints is not None, tool.name
        got = (hints.title, hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint)
        assert got == HINTS[tool.name], tool.name
        assert hints.open_world_hint is False and tool.title == hints.title, tool.name
    # on the wire: the spec's camelCase names, every hint given explicitly (none left to a default)
    wire = tools["delete_memory"].annotations.model_dump(by_alias=True)  # type: ignore[union-attr]
    assert {k for k, v in wire.items() if v is not None} == {
        "title",
        "readOnlyHint",
        "destructiveHint",
        "idempotentHint",
        "openWorldHint",
    }


async def exercise(session: ClientSession) -> None:
    await check_tools(session)

    first = structured(
        await session.call_tool(
            "remember",
            {
                "content": "Maya signed up for the Berlin marathon in September",
                "event_time": "2024-03-01T10:00:00Z",
            },
        )
    )
    assert first["state"] == "enriched" and first["keywords"] and first["context"]
    second = structured(
        await session.call_tool(
            "remember",
            {
                "content": "Maya will run the Berlin marathon in September in new shoes",
                "event_time": "2024-07-02T10:00:00Z",  # fixed: the date is part of the embedded text
                "pinned": True,
            },
        )
    )
    assert second["pinned"] is True and first["pinned"] is False and first["status"] == "active"

    found = structured(
        await session.call_tool("search_memory", {"query": "signed up, Berlin marathon", "k": 1})
    )
    assert found["hits"][0]["memory"]["id"] == first["id"] and "keyword" in found["hits"][0]["why"]
    lines = found["text"].splitlines()  # the same hits as prompt lines an agent can paste
    assert len(lines) == len(found["hits"]) and lines[0].startswith("[") and "Berlin" in lines[0]
    old = structured(
        await session.call_tool("search_memory", {"query": "marathon", "before": "2024-06-01T00:00:00Z"})
    )
    assert [h["memory"]["id"] for h in old["hits"] if not h["linked_from"]] == [first["id"]]

    got = structured(await session.call_tool("get_memory", {"id": second["id"]}))
    assert [(lk["other_id"], lk["direction"]) for lk in got["links"]] == [(first["id"], "out")]
    assert "Berlin" in got["links"][0]["other_content"]

    changed = structured(await session.call_tool("update_memory", {"id": first["id"], "tags": ["sport"]}))
    assert changed["tags"] == ["sport"]
    history = structured(await session.call_tool("memory_history", {"id": first["id"]}))
    assert history["versions"][0]["cause"] == "create" and history["versions"][-1]["cause"] == "update"

    assert structured(await session.call_tool("delete_memory", {"id": first["id"]})) == {
        "deleted": first["id"]
    }
    missing = await session.call_tool("get_memory", {"id": first["id"]})
    assert missing.is_error and "no note" in missing.content[0].text  # the library's advice reaches the model
    empty = await session.call_tool("remember", {"content": "   "})
    assert empty.is_error and "empty" in empty.content[0].text


def test_mcp_over_stdio(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "amem", "mcp"],
        env=server_env(tmp_path / "home"),
        cwd=str(tmp_path),
    )

    async def main() -> None:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await exercise(session)

    anyio.run(main)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mcp_over_streamable_http(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "amem", "mcp", "--transport", "http", "--port", str(port)],
        env=server_env(tmp_path / "home"),
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()  # type: ignore[union-attr]
                time.sleep(0.2)

        async def main() -> None:
            url = f"http://127.0.0.1:{port}/mcp"
            async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
                await exercise(session)

        anyio.run(main)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_mcp_http_refuses_a_public_address_without_no_auth(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from amem.cli import cli

    result = CliRunner().invoke(
        cli, ["--home", str(tmp_path), "mcp", "--transport", "http", "--host", "0.0.0.0"]
    )
    assert result.exit_code != 0 and "--no-auth" in str(result.exception)


def mcp_json_example() -> dict[str, Any]:
    """The project-scoped `.mcp.json` of docs/mcp.md (the block after its marker comment)."""
    found = re.search(r"<!-- file: .mcp.json -->\n```json\n(.*?)^```", DOCS.read_text(), re.S | re.M)
    assert found, "docs/mcp.md lost its .mcp.json example"
    return json.loads(found.group(1))  # type: ignore[no-any-return]


def test_the_docs_mcp_json_starts_a_server_a_client_can_list(tmp_path: Path) -> None:
    (entry,) = mcp_json_example()["mcpServers"].values()
    assert entry.get("type", "stdio") == "stdio" and set(entry) <= {"type", "command", "args", "env"}
    # as written, with the models swapped for the fakes and a fresh home; `amem` found on PATH as a
    # client finds it (this venv's script)
    env = {**server_env(tmp_path / "home"), **entry.get("env", {})}
    env |= {"AMEM_HOME": str(tmp_path / "home"), "AMEM_LLM": "fake", "AMEM_EMBEDDER": "fake"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=env, cwd=str(tmp_path))

    async def main() -> None:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await check_tools(session)
            saved = structured(await session.call_tool("remember", {"content": "The repo uses uv"}))
            found = structured(await session.call_tool("search_memory", {"query": "uv"}))
            assert found["hits"][0]["memory"]["id"] == saved["id"]

    anyio.run(main)


def test_the_docs_table_of_tools_matches_their_hints() -> None:
    rows = re.findall(
        r"^\| `(\w+)` \| ([^|]+) \|[^|]+\| (yes|no) \| (yes|no) \| (yes|no) \|$", DOCS.read_text(), re.M
    )
    table = {name: (title.strip(), *(v == "yes" for v in flags)) for name, title, *flags in rows}
    assert table == HINTS
