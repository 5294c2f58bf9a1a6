"""The OpenAI Agents SDK adapter, driven by the SDK's own ``Runner`` with its ``ScriptedModel`` (canned
answers that call the memory tools), and amem's MCP server through the SDK's ``MCPServerStdio``."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents", reason="pip install 'amem[openai-agents]'")
from agents import Agent, Runner, set_tracing_disabled
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call

from amem import AsyncMemory
from amem.integrations.openai_agents import memory_tools
from amem.llm.base import Message
from amem.llm.fake import FakeLLM, schema_answer
from tests.conftest import make_memory
from tests.docs_examples import python_blocks

PAGE = "integrations/openai-agents.md"
MODEL_LINE = 'model = "gpt-4.1-mini"'


@pytest.fixture(autouse=True)
def _offline(no_network: list[str]) -> None:
    """Tracing off (it would upload to OpenAI); any network connection fails the test."""
    set_tracing_disabled(True)


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[AsyncMemory]:
    m = AsyncMemory.wrap(make_memory(tmp_path / "m.db"))
    yield m
    m.sync.close()


def tool_output(call: ModelCall) -> str:
    """The text of the last tool result the model was sent."""
    outputs = [i for i in call.input if isinstance(i, dict) and i.get("type") == "function_call_output"]
    assert outputs, "the model was not sent a tool result"
    return str(outputs[-1]["output"])


def echo_tool_output(call: ModelCall) -> Any:
    """A final answer made of what the tool returned (what a real model would build its answer on)."""
    return [assistant_message(f"From memory: {tool_output(call)}")]


def remember_then_recall(fact: str, query: str) -> list[Any]:
    """Run 1: remember the fact and confirm; run 2: recall and answer with what came back."""
    return [
        [function_call("remember", {"text": fact}, call_id="call-1")],
        ModelStep.respond(lambda call: [assistant_message(tool_output(call))]),
        [function_call("recall", {"query": query, "k": 3}, call_id="call-2")],
        ModelStep.respond(echo_tool_output),
    ]


def make_agent(model: ScriptedModel, tools: list[Any]) -> Agent[Any]:
    return Agent(name="assistant", instructions="Use your memory tools.", model=model, tools=tools)


@pytest.mark.anyio
async def test_an_agent_remembers_across_two_runs(memory: AsyncMemory) -> None:
    alice = memory.scoped(user_id="alice")
    model = ScriptedModel(remember_then_recall("Alice's favourite tea is sencha", "favourite tea"))
    first = await Runner.run(make_agent(model, memory_tools(alice)), "Remember: my favourite tea is sencha.")
    assert str(first.final_output).startswith("Saved as memory ")
    [note] = await alice.list()
    assert note.id in str(first.final_output)
    assert note.content == "Alice's favourite tea is sencha" and note.user_id == "alice"
    # a new agent, a new conversation: the second run knows nothing but what recall finds
    second = await Runner.run(make_agent(model, memory_tools(alice)), "Which tea should I buy?")
    model.assert_complete()
    recall_call = model.calls[-1]
    assert "Alice's favourite tea is sencha" in tool_output(recall_call)
    assert "sencha" not in str(recall_call.input[0])  # the user's turn did not say it
    assert "sencha" in str(second.final_output)
    assert {t.name for t in model.calls[0].tools} == {"remember", "recall"}  # no forget by default


@pytest.mark.anyio
async def test_remember_does_not_wait_for_enrichment_unless_asked(tmp_path: Path) -> None:
    gate = threading.Event()  # the memory's LLM answers only once the gate opens

    def gated(messages: list[Message], schema: dict[str, Any] | None) -> Any:
        assert gate.wait(30)
        return schema_answer(messages[-1].content, schema)

    memory = AsyncMemory.wrap(make_memory(tmp_path / "m.db", llm=FakeLLM(handler=gated)))
    model = ScriptedModel(
        [
            [function_call("remember", {"text": "Bob plays the cello"}, call_id="c1")],
            [assistant_message("ok")],
            [function_call("remember", {"text": "Bob lives in Lyon"}, call_id="c2")],
            [assistant_message("ok")],
        ]
    )
    try:
        await Runner.run(make_agent(model, memory_tools(memory)), "cello")
        [pending] = await memory.list()
        assert pending.state == "pending"  # stored and searchable; the run did not wait for the LLM
        assert [h.note.id for h in await memory.search("cello")] == [pending.id]
        gate.set()
        assert await memory.wait_background(30)
        assert (await memory.get(pending.id)).state == "enriched"  # by the background worker
        # (waited for first: a note evolved by another write while its own enrichment is under way is
        # left pending for a later `enrich`, by design)
        await Runner.run(make_agent(model, memory_tools(memory, wait=True)), "Lyon")
        lyon = next(n for n in await memory.list() if n.content == "Bob lives in Lyon")
        assert lyon.state == "enriched"  # wait=True: enriched before the tool returned
        assert memory.background_status().added == 1  # only the first note went to the worker
    finally:
        gate.set()
        await memory.aclose()


@pytest.mark.anyio
async def test_one_agent_many_users_through_the_run_context(memory: AsyncMemory) -> None:
    tools = memory_tools(lambda ctx: memory.scoped(user_id=ctx.context["user"]))
    model = ScriptedModel(
        [
            [function_call("remember", {"text": "My dog is called Rex"}, call_id="c1")],
            [assistant_message("saved")],
            [function_call("recall", {"query": "dog called", "k": 5}, call_id="c2")],
            ModelStep.respond(echo_tool_output),
            [function_call("recall", {"query": "dog called", "k": 5}, call_id="c3")],
            ModelStep.respond(echo_tool_output),
        ]
    )
    agent = make_agent(model, tools)
    await Runner.run(agent, "My dog is called Rex", context={"user": "alice"})
    bob = await Runner.run(agent, "What is my dog called?", context={"user": "bob"})
    assert bob.final_output == "From memory: No memories match."
    alice = await Runner.run(agent, "What is my dog called?", context={"user": "alice"})
    assert "My dog is called Rex" in str(alice.final_output)
    assert [n.user_id for n in await memory.list()] == ["alice"]


@pytest.mark.anyio
async def test_forget_is_opt_in_and_errors_reach_the_model_as_advice(memory: AsyncMemory) -> None:
    note = await memory.add("The wifi password is hunter2")
    model = ScriptedModel(
        [
            [function_call("recall", {"query": "wifi password", "k": 2}, call_id="c1")],
            ModelStep.respond(echo_tool_output),
            [function_call("forget", {"note_id": note.id}, call_id="c2")],
            ModelStep.respond(echo_tool_output),
            [function_call("forget", {"note_id": "no-such-id"}, call_id="c3")],
            ModelStep.respond(echo_tool_output),
            [function_call("recall", {"query": "   ", "k": 2}, call_id="c4")],
            ModelStep.respond(echo_tool_output),
        ]
    )
    agent = make_agent(model, memory_tools(memory, forget=True))
    assert {t.name for t in agent.tools} == {"remember", "recall", "forget"}
    found = await Runner.run(agent, "What is the wifi password?")
    assert f"(id {note.id})" in str(found.final_output)  # with forget on, recall shows the ids
    gone = await Runner.run(agent, "Forget the wifi password")
    assert gone.final_output == f"From memory: Deleted memory {note.id}."
    assert await memory.count() == 0
    missing = await Runner.run(agent, "Forget it again")
    assert "Memory error: no note 'no-such-id'" in str(missing.final_output)
    empty = await Runner.run(agent, "recall nothing")
    assert "Memory error: query is empty" in str(empty.final_output)


def test_a_plain_memory_is_accepted_and_anything_else_refused(tmp_path: Path) -> None:
    with make_memory(tmp_path / "m.db") as m:
        assert [t.name for t in memory_tools(m)] == ["remember", "recall"]
    with pytest.raises(TypeError, match="amem Memory or AsyncMemory"):
        memory_tools("not a memory")  # type: ignore[arg-type]


def run_docs_block(code: str, model: ScriptedModel) -> None:
    assert code.count(MODEL_LINE) == 1, f"the docs example must take its model from `{MODEL_LINE}`"
    exec(compile(code.replace(MODEL_LINE, "model = scripted"), PAGE, "exec"), {"scripted": model})


def test_the_docs_example_runs(fake_models_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    model = ScriptedModel(remember_then_recall("Alice's favourite tea is sencha", "favourite tea"))
    run_docs_block(python_blocks(PAGE)[0], model)
    model.assert_complete()
    assert "From memory: " in capsys.readouterr().out
    assert "Alice's favourite tea is sencha" in tool_output(model.calls[-1])


def test_the_docs_mcp_example_runs_amem_mcp_over_stdio(
    fake_models_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The page's second example: each run starts `amem mcp` as a subprocess, the SDK lists its tools and
    calls them; the second server process finds what the first one stored."""
    pytest.importorskip("mcp", reason="pip install 'amem[server]'")
    venv_bin = Path(sys.executable).parent  # the `amem` command of this environment
    monkeypatch.setenv("PATH", f"{venv_bin}{os.pathsep}{os.environ['PATH']}")
    model = ScriptedModel(
        [
            [function_call("remember", {"content": "Alice's favourite tea is sencha"}, call_id="c1")],
            ModelStep.respond(lambda call: [assistant_message("Saved.")]),
            [function_call("search_memory", {"query": "favourite tea"}, call_id="c2")],
            ModelStep.respond(echo_tool_output),
        ]
    )
    run_docs_block(python_blocks(PAGE)[1], model)
    model.assert_complete()
    tools = {t.name for t in model.calls[0].tools}
    assert tools == {"remember", "search_memory", "get_memory"}  # the page's tool_filter: nothing destructive
    assert "favourite tea is sencha" in tool_output(model.calls[-1])  # the server's search_memory JSON
    assert "sencha" in capsys.readouterr().out
