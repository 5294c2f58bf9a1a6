"""`amem mcp` as a subprocess, driven by the MCP SDK's own clients over stdio and streamable HTTP."""

from __future__ import annotations

import os
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

TOOLS = {
    "remember",
    "search_memory",
    "get_memory",
    "update_memory",
    "delete_memory",
    "memory_history",
    "export_memories",
    "import_memories",
}


def server_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEM_") or k.startswith("AMEM_TEST_")}
    return {**env, "AMEM_HOME": str(home), "AMEM_LLM": "fake", "AMEM_EMBEDDER": "fake"}


def structured(result: Any) -> Any:
    assert not result.is_error, [c.text for c in result.content]
    return result.structured_content


async def exercise(session: ClientSession) -> None:
    await session.initialize()
    tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():  # written for an LLM caller: every tool and parameter is described
        assert tool.description and len(tool.description) > 40
        for name, prop in tool.input_schema["properties"].items():
            assert prop.get("description"), (tool.name, name)

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
