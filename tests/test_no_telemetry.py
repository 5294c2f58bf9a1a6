"""No telemetry: a whole session on the embedded defaults opens no network connection at all.

A subprocess installs an audit hook that records every ``socket.connect`` and ``socket.getaddrinfo``, then
drives the CLI (add, search, enrich, consolidate, export, import, stats) on the real local models, the REST
app in-process and the MCP server in-memory. Any connection other than a Unix socket is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("AMEM_TEST_MODELS_DIR") or REPO / ".amem-test" / "models")

SCRIPT = r"""
import json, socket, sys

seen = []

def hook(event, args):
    if event == "socket.connect":
        addr = args[1]
        if not isinstance(addr, (str, bytes)):  # a Unix socket path is local by definition
            seen.append(f"connect {addr!r}")
    elif event == "socket.getaddrinfo":
        seen.append(f"resolve {args[0]!r}")

sys.addaudithook(hook)

from amem.cli import cli

def run(*args):
    cli.main(list(args), standalone_mode=False)

out = sys.argv[1]
run("add", "Maya signed up for the Berlin marathon in September")
run("add", "Maya bought new running shoes for the marathon")
run("search", "marathon shoes")
run("enrich")
run("consolidate", "--no-llm")
run("export", out)
run("import", out)
run("stats")

from fastapi.testclient import TestClient  # in-process ASGI: no socket is opened by the client
from amem import Memory
from amem.server.api import create_app

memory = Memory()
with TestClient(create_app(memory)) as client:
    assert client.post("/v1/search", json={"query": "marathon"}).status_code == 200

import anyio
from mcp import Client
from amem.server.mcp_server import build_server

async def mcp():
    async with Client(build_server(memory)) as c:
        assert not (await c.call_tool("search_memory", {"query": "marathon"})).is_error

anyio.run(mcp)
memory.close()
print(json.dumps(seen))
"""


@pytest.mark.local_models
@pytest.mark.skipif(os.environ.get("AMEM_SKIP_LOCAL_MODELS") == "1", reason="AMEM_SKIP_LOCAL_MODELS=1")
def test_a_session_on_the_embedded_defaults_opens_no_connection(tmp_path: Path) -> None:
    pytest.importorskip("mcp", reason="pip install 'amem[server]'")
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(MODELS.resolve(), target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEM_") and k != "OPENAI_API_KEY"}
    env.update(AMEM_HOME=str(home), AMEM_LLM="local:gemma-3-270m", AMEM_LLM_THREADS="2")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "export.jsonl")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    attempts = json.loads(done.stdout.strip().splitlines()[-1])
    assert attempts == []
    assert (tmp_path / "export.jsonl").read_text().count('"type": "note"') == 2
