"""Faulty LLM providers on both stores: a server on 127.0.0.1 that times out, answers 429/500, cuts the
connection or returns broken or schema-violating JSON. Every note must be stored (pending where enrichment
failed, with its content, metadata and event time intact and searchable), retries must happen only at the
provider edge, and after healing the real `amem enrich` command must finish every pending note.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

import amem.pipeline
from amem.bench.flaky import (
    CONTENT_FAULTS,
    FAULTS,
    HEALTHY,
    TRANSPORT_FAULTS,
    FlakyLLMServer,
    Served,
    broken_json,
    schema_violation,
)
from amem.bench.provider_faults import Enricher, amem_env, retry_violations, run_provider_faults
from amem.cli import cli
from amem.config import Settings
from amem.errors import ConfigError, LLMUnavailable
from amem.llm.base import Message
from amem.llm.fake import schema_answer
from amem.llm.openai_compat import OpenAICompatLLM
from amem.llm.runner import CallFailed, LLMRunner, Prompt
from amem.notes import LLMCall, Note
from amem.prompts import batch, note
from amem.providers import make_llm
from amem.steps.write import make_candidates

NOTES = 12
#: seeds fixed so each run injects its fault often enough to leave some notes pending (checked below)
SEEDS = dict(zip(FAULTS, (11, 12, 13, 14, 15, 16, 17, 18), strict=True))


def cli_enrich(home: Path, seen: list[dict[str, Any]]) -> Enricher:
    """`amem enrich --json` through click, configured only by AMEM_* variables (as a user would)."""

    def run(settings: Settings) -> object:
        result = CliRunner().invoke(cli, ["--home", str(home), "enrich", "--json"], env=amem_env(settings))
        assert result.exit_code == 0, result.output
        seen.append(json.loads(result.stdout))
        return seen[-1]

    return run


@pytest.mark.parametrize("kind", FAULTS)
def test_each_fault_kind_alone_loses_nothing_and_enrich_finishes(
    kind: str, store_url: str, tmp_path: Path
) -> None:
    cli_reports: list[dict[str, Any]] = []
    report = run_provider_faults(
        store_url,
        NOTES,
        {kind: 0.5},
        SEEDS[kind],
        max_retries=1,
        timeout=0.5,
        enrich=cli_enrich(tmp_path / "home", cli_reports),
    )
    assert report.ok, report.problems()
    add, healed = report.phase("add"), report.phase("enrich-healed")
    assert set(add.faults) == {kind} and add.faults[kind] >= 3
    assert report.stored == NOTES and report.pending_after_add > 0
    assert report.enriched_at_end == NOTES
    assert add.requests <= add.request_bound
    if kind in TRANSPORT_FAULTS:  # retried at the edge; a call fails only when every retry failed
        assert add.unreachable > 0 and add.repaired == 0 and add.attempts == add.calls
        assert add.requests > add.attempts
    else:  # answered, so never re-sent; the runner's one repair re-prompt is the only second attempt
        assert add.unreachable == 0 and add.repaired > 0 and add.requests == add.attempts
    # the command, not a side door, finished them: one clean request per pending note, nothing else
    assert cli_reports == [{"enriched": report.pending_after_add, "still_pending": 0, "failed": 0}]
    assert healed.calls == healed.requests == report.pending_after_add and not healed.faults


def test_all_faults_mixed_including_an_enrich_during_the_outage(store_url: str, tmp_path: Path) -> None:
    rates = dict.fromkeys(TRANSPORT_FAULTS, 0.08) | dict.fromkeys(CONTENT_FAULTS, 0.1)
    cli_reports: list[dict[str, Any]] = []
    report = run_provider_faults(
        store_url,
        24,
        rates,
        seed=3,
        timeout=0.5,
        faulty_enrich=True,
        enrich=cli_enrich(tmp_path / "home", cli_reports),
    )
    assert report.ok, report.problems()
    add, during, healed = (report.phase(p) for p in ("add", "enrich-faulty", "enrich-healed"))
    assert set(add.faults) | set(during.faults) == set(FAULTS)
    assert report.stored == 24 and report.pending_after_add > 0 and report.enriched_at_end == 24
    for phase in (add, during, healed):
        assert phase.requests <= phase.request_bound
    assert healed.calls == cli_reports[0]["enriched"] > 0 and healed.requests == healed.calls


# -- the checks can fail ------------------------------------------------------------------------
def test_a_retry_above_the_provider_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline that asks again when the provider was unreachable breaks the rule and is reported."""
    original = LLMRunner.run

    def retrying(self: LLMRunner, prompt: Prompt[Any], note_ids: list[str]) -> Any:
        try:
            return original(self, prompt, note_ids)
        except CallFailed as exc:
            if not exc.unreachable:
                raise
            return original(self, prompt, note_ids)

    monkeypatch.setattr(LLMRunner, "run", retrying)
    report = run_provider_faults(f"sqlite:///{tmp_path / 'm.db'}", 8, {"http_500": 1.0}, 5, max_retries=1)
    assert any("a retry above the provider" in v or "calls for one note" in v for v in report.violations)
    assert not report.ok


def test_a_note_stored_with_invented_defaults_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = amem.pipeline.store_pending

    def inventing(mem: Any, n: Note, base: Any, call: LLMCall | None, is_new: bool = True) -> Note:
        n.keywords, n.tags, n.context = ["general"], ["misc"], "A note."
        return original(mem, n, base, call, is_new)

    monkeypatch.setattr(amem.pipeline, "store_pending", inventing)
    report = run_provider_faults(f"sqlite:///{tmp_path / 'm.db'}", 8, {"http_500": 1.0}, 5, max_retries=1)
    assert report.emptied and not report.ok


def test_a_dropped_note_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        amem.pipeline, "store_pending", lambda mem, n, *a, **k: n
    )  # "returns" it, stores nothing
    report = run_provider_faults(f"sqlite:///{tmp_path / 'm.db'}", 8, {"http_500": 1.0}, 5, max_retries=1)
    assert report.lost and report.stored < 8 and not report.ok


def test_retry_rule_on_hand_made_logs() -> None:
    call = LLMCall(step="construct", prompt_version="v", model="m")
    failed = call.model_copy(update={"ok": False, "error": "LLMUnavailable: down"})
    ok = [Served("http_500", "a"), Served(HEALTHY, "a")]
    assert retry_violations(ok, [call], max_retries=1) == []
    assert retry_violations([Served("cut", "a"), Served("timeout", "a")], [failed], max_retries=1) == []
    too_many = [Served("http_500", "a"), Served("http_500", "a"), Served(HEALTHY, "a")]
    assert any("at most 2" in v for v in retry_violations(too_many, [call], max_retries=1))
    resent = [Served(HEALTHY, "a"), Served(HEALTHY, "a")]
    assert any("sent again" in v for v in retry_violations(resent, [call, call], max_retries=1))
    assert any("attempts" in v for v in retry_violations(ok, [call, call], max_retries=1))


# -- the server does what it says --------------------------------------------------------------
def _prompts() -> list[Prompt[Any]]:
    old = Note(content="Ana: the harbour lantern was repaired on Monday.")
    new = Note(content="Ana: the harbour lantern broke again today, after the storm.")
    other = Note(content="Ben: I will paint the harbour lantern red.")
    cands = make_candidates([(old, 0.9)])
    return [
        note.render(new, cands, ["N1"]),
        note.render(new, [], []),
        batch.render([("T1", new), ("T2", other)], cands, ["N1"]),
    ]


@pytest.mark.parametrize("prompt", _prompts(), ids=["note", "note-alone", "batch"])
def test_healthy_answers_validate_and_faulty_ones_never_do(prompt: Prompt[Any]) -> None:
    text = prompt.messages[0].content
    healthy = schema_answer(text, prompt.schema)
    LLMRunner._validate(prompt, json.dumps(healthy))
    for variant in range(3):
        with pytest.raises(ValueError):
            LLMRunner._validate(prompt, broken_json(json.dumps(healthy), variant))
        with pytest.raises((ValueError, ValidationError)):
            bad = schema_violation(healthy, list(prompt.schema["required"]), variant)
            LLMRunner._validate(prompt, json.dumps(bad))


def test_server_injects_each_fault_on_the_wire_counts_them_and_heals() -> None:
    body = {
        "model": "flaky",
        "messages": [{"role": "user", "content": "NEW NOTE: a lantern"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"schema": note.render(Note(content="x"), [], []).schema},
        },
    }
    errors = {
        "timeout": httpx.ReadTimeout,
        "cut": httpx.RemoteProtocolError,
        "cut_body": httpx.RemoteProtocolError,
    }
    with FlakyLLMServer(seed=1, hang=1.0) as server, httpx.Client(timeout=0.3) as client:
        url = server.url + "/chat/completions"
        for kind in FAULTS:
            server.set_rates({kind: 1.0})
            if kind in errors:
                with pytest.raises(errors[kind]):
                    client.post(url, json=body)
                continue
            started = time.perf_counter()
            response = client.post(url, json=body)
            if kind == "drip":  # each piece within the per-read timeout: plain httpx waits for all of it
                assert response.status_code == 200 and time.perf_counter() - started >= 0.9
            elif kind == "http_429":
                assert response.status_code == 429 and float(response.headers["retry-after"]) <= 0.1
            elif kind == "http_500":
                assert response.status_code == 500
            else:
                content = response.json()["choices"][0]["message"]["content"]
                assert response.status_code == 200 and content
        server.heal()
        answer = client.post(url, json=body).json()["choices"][0]["message"]["content"]
        assert json.loads(answer)["keywords"]
        assert dict(server.faults) == dict.fromkeys(FAULTS, 1)
        assert server.requests == len(FAULTS) + 1 and server.log[-1].outcome == HEALTHY
        with pytest.raises(ValueError, match="sum to at most 1"):
            server.set_rates({"cut": 0.7, "timeout": 0.7})


def test_a_drip_fed_answer_is_given_up_at_the_timeout_not_after_it() -> None:
    """httpx's timeouts are per read: without a deadline on the whole exchange, an answer sent in pieces
    0.1 s apart would hold the caller for the full 2 s on each attempt, far past its 0.3 s timeout."""
    schema = note.render(Note(content="x"), [], []).schema
    with FlakyLLMServer({"drip": 1.0}, hang=2.0) as server:
        llm = OpenAICompatLLM("flaky", server.url, "", timeout=0.3, max_retries=1, retry_base=0.01)
        started = time.perf_counter()
        with pytest.raises(LLMUnavailable, match="timed out"):
            llm.complete([Message("user", "NEW NOTE: a lantern")], schema=schema)
        assert time.perf_counter() - started < 1.5
        assert server.requests == 2 and server.faults["drip"] == 2
        server.heal()
        assert json.loads(llm.complete([Message("user", "NEW NOTE: a lantern")], schema=schema).text)["tags"]


def test_retry_knobs_reach_the_provider_and_are_checked(tmp_path: Path) -> None:
    env = {"AMEM_LLM_MAX_RETRIES": "1", "AMEM_LLM_RETRY_BASE": "0.01", "AMEM_LLM_TIMEOUT": "0.5"}
    settings = Settings.resolve({"home": tmp_path}, env=env)
    llm = make_llm("openai:flaky", settings)
    assert isinstance(llm, OpenAICompatLLM)
    assert (llm.max_retries, llm.retry_base, llm.timeout) == (1, 0.01, 0.5)
    assert Settings.resolve({"home": tmp_path}, env={}).llm_max_retries == 3
    with pytest.raises(ConfigError, match="llm_max_retries"):
        Settings.resolve({"home": tmp_path}, env={"AMEM_LLM_MAX_RETRIES": "-1"})
