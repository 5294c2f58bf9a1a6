"""`amem bench serve`: does `amem serve` keep answering searches while a batch job enriches?

A real `amem serve` process on 127.0.0.1 (this interpreter, the configured LLM and embedder) serves a
SQLite memory preloaded with a LoCoMo conversation's first turns (enriched by the fake LLM beforehand,
so nothing is left pending for the server's LLM). A client in this process fires ``clients`` searches at
once (the conversation's questions), ``rounds`` times, first on the idle server, then while a batch job
(``POST /v1/notes/batch``, the next ``batch`` turns) keeps the server's LLM busy. Reported for both
phases, from the same queries: p50/p95/max latency, searches per second, errors, and how far the job
got meanwhile. Client and server are separate processes, so the client's own work is not the server's.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from .. import locomo
from ..config import Settings
from ..errors import InvalidInput
from ..llm.fake import FakeLLM
from ..memory import Memory
from . import metrics


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _preload(settings: Settings, turns: list[locomo.Turn]) -> None:
    """The searchable history, enriched by the fake LLM (the bench measures serving, not this load)."""
    memory = Memory(settings=replace(settings, llm="fake", llm_cache=False), llm=FakeLLM(), user_id="bench")
    try:
        memory.add_many([{"content": t.content(), "event_time": t.event_time} for t in turns])
    finally:
        memory.close()


def _start(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    """The server, with this run's home (its models and config) and the bench's store; its output goes
    to ``log`` (a pipe nobody reads would stop a chatty server mid-run)."""
    env = {**os.environ, "AMEM_HOME": str(settings.home), "AMEM_DATABASE_URL": settings.store_url}
    env |= {"AMEM_LLM": settings.llm, "AMEM_EMBEDDER": settings.embedder, "AMEM_LLM_CACHE": "false"}
    command = [sys.executable, "-m", "amem", "serve", "--port", str(port)]
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_up(client: httpx.Client, server: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if server.poll() is not None:
            said = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"amem serve exited ({server.returncode}): {said}")
        try:
            if client.get("/v1/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"amem serve did not answer within {timeout:g} s")


async def _rounds(url: str, queries: list[str], clients: int, rounds: int, job: str | None) -> dict[str, Any]:
    """``rounds`` bursts of ``clients`` concurrent searches; with ``job``, stops early if it ends."""
    times: list[float] = []
    errors = 0
    during = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def one(query: str) -> None:
            nonlocal errors
            start = time.perf_counter()
            try:
                response = await client.post("/v1/search", json={"query": query, "k": 5})
                errors += response.status_code != 200
            except httpx.TransportError:  # refused, reset, timed out: counted, the run goes on
                errors += 1
            times.append((time.perf_counter() - start) * 1000)

        started = time.perf_counter()
        for r in range(rounds):
            burst = [queries[(r * clients + i) % len(queries)] for i in range(clients)]
            await asyncio.gather(*(one(q) for q in burst))
            if job is not None:
                state = (await client.get(f"/v1/jobs/{job}")).json()["state"]
                if state != "running":
                    break
            during += 1
        seconds = time.perf_counter() - started
    return {
        "searches": len(times),
        "p50_ms": round(metrics.percentile(times, 0.5) or 0, 1),
        "p95_ms": round(metrics.percentile(times, 0.95) or 0, 1),
        "max_ms": round(max(times), 1),
        "per_s": round(len(times) / seconds, 1),
        "errors": errors,
        "rounds_with_job_running": during if job is not None else None,
    }


def run(
    settings: Settings,
    data: Path,
    conversation: str | None,
    preload: int,
    batch: int,
    clients: int,
    rounds: int,
) -> dict[str, Any]:
    conv = locomo.pick(data, conversation)
    if len(conv.turns) < preload + batch:
        raise InvalidInput(f"{conv.sample_id} has {len(conv.turns)} turns; lower --preload or --batch")
    queries = [str(qa["question"]) for qa in conv.qa if qa.get("question")] or [t.text for t in conv.turns]
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        here = replace(settings, database_url=f"sqlite:///{Path(tmp) / 'bench.db'}")
        _preload(here, conv.turns[:preload])
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "server.log"
        server = _start(here, port, log)
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                _wait_up(client, server, log)
                asyncio.run(_rounds(url, queries, clients, 1, None))  # warm: models loaded, caches filled
                rows["idle server"] = asyncio.run(_rounds(url, queries, clients, rounds, None))
                items = [
                    {"content": t.content(), "event_time": t.event_time.isoformat()}
                    for t in conv.turns[preload : preload + batch]
                ]
                answer = client.post("/v1/notes/batch?user_id=bench", json={"items": items})
                answer.raise_for_status()
                job = answer.json()["id"]
                while client.get(f"/v1/jobs/{job}").json()["state"] == "queued":
                    time.sleep(0.1)
                time.sleep(1.0)  # the job is inside its first LLM call
                busy = asyncio.run(_rounds(url, queries, clients, rounds, job))
                final = client.get(f"/v1/jobs/{job}").json()
                busy["job_done_of"] = f"{final.get('done', 0)}/{final.get('total', batch)}"
                rows[f"batch job enriching ({settings.llm})"] = busy
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
    return rows


def markdown(rows: dict[str, Any]) -> str:
    lines = [
        "| server | searches | p50 ms | p95 ms | max ms | searches/s | errors | rounds in the job | job |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        during = "–" if r["rounds_with_job_running"] is None else r["rounds_with_job_running"]
        lines.append(
            f"| {name} | {r['searches']} | {r['p50_ms']} | {r['p95_ms']} | {r['max_ms']} | {r['per_s']} "
            f"| {r['errors']} | {during} | {r.get('job_done_of', '–')} |"
        )
    idle, busy = list(rows.values())[:2] if len(rows) >= 2 else (None, None)
    if idle and busy and idle["p95_ms"]:
        lines.append(f"\np95 while enriching / idle: {busy['p95_ms'] / idle['p95_ms']:.2f}x")
    return "\n".join(lines)
