"""The Google ADK adapter, driven by ADK's own ``Runner`` and ``InMemorySessionService`` with an
``LlmAgent`` whose model is a scripted ``BaseLlm`` (canned answers, every request recorded) and ADK's
own memory tools (``PreloadMemoryTool``, ``load_memory``)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.adk", reason="pip install 'amem[adk]'")
from google.adk.agents import LlmAgent
from google.adk.agents.callback_context import CallbackContext
from google.adk.events.event import Event
from google.adk.memory.memory_entry import MemoryEntry
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService, Session
from google.adk.tools import load_memory
from google.adk.tools.preload_memory_tool import PreloadMemoryTool
from google.genai import types
from pydantic import Field

from amem import MAX_CONTENT_CHARS, AsyncMemory
from amem.integrations.adk import AmemMemoryService
from tests.conftest import make_memory
from tests.docs_examples import python_blocks

PAGE = "integrations/adk.md"
#: the example's one swappable place: the chat model
MODEL_LINE = (
    'model = "gemini-2.5-flash"  # the chat model: a Gemini name (GOOGLE_API_KEY) or any ADK BaseLlm\n'
)
APP = "diner"

pytestmark = pytest.mark.usefixtures("no_network")


class ScriptedLlm(BaseLlm):
    """Answers in order: text, or ``("load_memory", query)`` for a call to that tool."""

    model: str = "scripted"
    answers: list[Any] = Field(default_factory=list)
    requests: list[LlmRequest] = Field(default_factory=list)

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self.requests.append(llm_request.model_copy(deep=True))
        answer = self.answers.pop(0)
        if isinstance(answer, tuple):
            call = types.FunctionCall(name=answer[0], args={"query": answer[1]})
            part = types.Part(function_call=call)
        else:
            part = types.Part(text=answer)
        yield LlmResponse(content=types.Content(role="model", parts=[part]))

    def prompt(self, index: int) -> str:
        """The text the model was sent in request ``index`` (tool results included)."""
        out = []
        for content in self.requests[index].contents:
            for part in content.parts or []:
                if part.text:
                    out.append(f"{content.role}: {part.text}")
                if part.function_response:
                    out.append(f"tool: {part.function_response.response}")
        return "\n".join(out)


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[AsyncMemory]:
    m = AsyncMemory.wrap(make_memory(tmp_path / "m.db"))
    yield m
    m.sync.close()


async def remember(callback_context: CallbackContext) -> None:
    """ADK's own way to save a session: after each run of the agent."""
    await callback_context.add_session_to_memory()


class Chat:
    """A runner over one agent; ``ask`` runs one invocation and returns the final answer."""

    def __init__(self, service: AmemMemoryService, model: ScriptedLlm, tool: Any, save: bool = True) -> None:
        agent = LlmAgent(
            name="helper",
            model=model,
            instruction="You are a helpful assistant.",
            tools=[tool],
            after_agent_callback=remember if save else None,
        )
        self.sessions = InMemorySessionService()
        self.runner = Runner(app_name=APP, agent=agent, session_service=self.sessions, memory_service=service)

    async def new_session(self, user: str = "maya") -> Session:
        return await self.sessions.create_session(app_name=APP, user_id=user)

    async def ask(self, session: Session, text: str) -> str:
        message = types.Content(role="user", parts=[types.Part(text=text)])
        answer = ""
        async for event in self.runner.run_async(
            user_id=session.user_id, session_id=session.id, new_message=message
        ):
            if event.is_final_response() and event.content and event.content.parts:
                answer = event.content.parts[0].text or ""
        return answer

    async def session(self, session: Session) -> Session:
        found = await self.sessions.get_session(app_name=APP, user_id=session.user_id, session_id=session.id)
        assert found is not None
        return found


@pytest.mark.anyio
async def test_a_new_session_recalls_what_run_one_stored(memory: AsyncMemory) -> None:
    model = ScriptedLlm(answers=["Noted, no peanuts.", "Better skip the satay: peanut sauce."])
    chat = Chat(AmemMemoryService(memory), model, PreloadMemoryTool())
    first = await chat.new_session()
    await chat.ask(first, "I'm allergic to peanuts.")
    assert "PAST_CONVERSATIONS" not in model.prompt(0)  # nothing to recall yet

    scope = memory.scoped(user_id="maya", agent_id=APP)
    notes = {n.content: n for n in await scope.list()}
    said = notes["user: I'm allergic to peanuts."]
    assert "helper: Noted, no peanuts." in notes
    assert said.metadata["session_id"] == first.id and said.metadata["author"] == "user"
    assert said.metadata["event_id"] == (await chat.session(first)).events[0].id

    answer = await chat.ask(await chat.new_session(), "Can I order the satay?")  # a new session
    assert answer == "Better skip the satay: peanut sauce."
    recalled = model.prompt(1).split("<PAST_CONVERSATIONS>")[1].split("</PAST_CONVERSATIONS>")[0]
    assert "user: I'm allergic to peanuts." in recalled  # the speaker as ADK writes it, not twice
    assert "user: user:" not in recalled and "Time: " in recalled


@pytest.mark.anyio
async def test_the_load_memory_tool_searches_amem(memory: AsyncMemory) -> None:
    service = AmemMemoryService(memory, k=3)
    model = ScriptedLlm(answers=["Noted.", ("load_memory", "peanut allergy"), "Peanuts, so no satay."])
    chat = Chat(service, model, load_memory)
    await chat.ask(await chat.new_session(), "I'm allergic to peanuts.")
    answer = await chat.ask(await chat.new_session(), "What can't I eat?")
    assert answer == "Peanuts, so no satay."
    assert "load_memory" in str(model.requests[1].config.system_instruction)  # ADK told the model
    assert "I'm allergic to peanuts." in model.prompt(2)  # the tool's result, sent back to the model

    [entry, *_] = (await service.search_memory(app_name=APP, user_id="maya", query="peanut allergy")).memories
    assert entry.author == "user" and entry.content.parts[0].text == "I'm allergic to peanuts."
    assert entry.id == (await memory.scoped(user_id="maya", agent_id=APP).get(str(entry.id))).id
    assert entry.timestamp and entry.custom_metadata["source"] == "adk" and entry.custom_metadata["why"]


@pytest.mark.anyio
async def test_adding_a_session_again_stores_each_event_once(
    memory: AsyncMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    added: list[str] = []
    real_add_many = AsyncMemory.add_many

    async def add_many(self: AsyncMemory, items: Any, **kwargs: Any) -> Any:
        added.extend(item["content"] for item in items)
        return await real_add_many(self, items, **kwargs)

    monkeypatch.setattr(AsyncMemory, "add_many", add_many)
    service = AmemMemoryService(memory)
    model = ScriptedLlm(answers=["First answer.", "Second answer."])
    chat = Chat(service, model, PreloadMemoryTool())
    session = await chat.new_session()
    await chat.ask(session, "My table is number twelve.")
    await chat.ask(session, "And I'd like sparkling water.")  # the session is saved after each run
    scope = memory.scoped(user_id="maya", agent_id=APP)
    assert await scope.count() == 4
    assert len(added) == 4  # the second save skipped the first run's events
    await service.add_session_to_memory(await chat.session(session))
    assert len(added) == 4  # nothing new: nothing embedded or written
    await service.add_events_to_memory(
        app_name=APP, user_id="maya", events=(await chat.session(session)).events, session_id=session.id
    )
    assert await scope.count() == 4
    assert await memory.wait_background(30)
    causes = {v.cause.value for n in await scope.list() for v in await scope.history(n.id)}
    assert "duplicate" not in causes  # nothing was written twice, not even as a folded copy

    # a rewind takes the second run back: its notes go too (as ADK's own services do)
    second_run = (await chat.session(session)).events[-1].invocation_id
    await chat.runner.rewind_async(
        user_id="maya", session_id=session.id, rewind_before_invocation_id=second_run
    )
    await service.add_session_to_memory(await chat.session(session))
    assert sorted(n.content for n in await scope.list()) == [
        "helper: First answer.",
        "user: My table is number twelve.",
    ]


@pytest.mark.anyio
async def test_apps_and_users_are_scopes(memory: AsyncMemory) -> None:
    service = AmemMemoryService(memory)
    model = ScriptedLlm(answers=["Saved."])
    chat = Chat(service, model, PreloadMemoryTool())
    await chat.ask(await chat.new_session("ann"), "My locker code is 4411.")
    found = await service.search_memory(app_name=APP, user_id="ann", query="locker code")
    assert any("4411" in str(m.content.parts[0].text) for m in found.memories)
    assert not (await service.search_memory(app_name=APP, user_id="ben", query="locker code")).memories
    assert not (await service.search_memory(app_name="other", user_id="ann", query="locker code")).memories
    assert not (await service.search_memory(app_name=APP, user_id="ann", query="  ")).memories


@pytest.mark.anyio
async def test_explicit_memories_events_and_deletes(memory: AsyncMemory) -> None:
    service = AmemMemoryService(memory, wait=True)
    entry = MemoryEntry(
        content=types.Content(role="user", parts=[types.Part(text="Maya prefers window seats")]),
        author="host",
        timestamp="2025-03-01T19:30:00+00:00",
        custom_metadata={"kind": "preference"},
    )
    await service.add_memory(app_name=APP, user_id="maya", memories=[entry], custom_metadata={"by": "test"})
    thought = types.Part(text="hidden reasoning", thought=True)
    long = "x " * 15000  # a pasted document: stored cut to amem's limit
    events = [
        Event(
            id="e1",
            author="user",
            content=types.Content(role="user", parts=[types.Part(text="Birthday on Friday")]),
        ),
        Event(id="e2", author="helper", content=types.Content(role="model", parts=[thought])),  # no text
        Event(id="e3", author="user", content=types.Content(role="user", parts=[types.Part(text=long)])),
    ]
    await service.add_events_to_memory(
        app_name=APP, user_id="maya", events=events, custom_metadata={"turn": 7}
    )
    scope = memory.scoped(user_id="maya", agent_id=APP)
    notes = {n.content: n for n in await scope.list()}
    [cut] = [notes.pop(c) for c in list(notes) if c.startswith("user: x x")]
    assert MAX_CONTENT_CHARS - 2 <= len(cut.content) <= MAX_CONTENT_CHARS and cut.metadata["truncated"]
    await scope.delete(cut.id)
    assert set(notes) == {"host: Maya prefers window seats", "user: Birthday on Friday"}
    window = notes["host: Maya prefers window seats"]
    assert window.metadata == {"by": "test", "kind": "preference", "source": "adk", "author": "host"}
    assert window.event_time.year == 2025 and window.state == "enriched"  # wait=True
    assert notes["user: Birthday on Friday"].metadata == {
        "turn": 7,
        "source": "adk",
        "event_id": "e1",
        "author": "user",
    }

    [hit, *_] = (await service.search_memory(app_name=APP, user_id="maya", query="window seats")).memories
    assert hit.author == "host" and hit.content.parts[0].text == "Maya prefers window seats"
    await service.delete_memory(app_name=APP, user_id="ben", memory_id=hit.id)  # not ben's: nothing happens
    assert await scope.count() == 2
    await service.delete_memory(app_name=APP, user_id="maya", memory_id=hit.id)
    await service.delete_memory(app_name=APP, user_id="maya", memory_id=hit.id)  # gone already: no error
    assert [n.content for n in await scope.list()] == ["user: Birthday on Friday"]


@pytest.mark.anyio
async def test_a_service_that_opened_its_memory_closes_it(fake_models_env: None) -> None:
    service = AmemMemoryService()
    chat = Chat(service, ScriptedLlm(answers=["Hello!"]), PreloadMemoryTool())
    await chat.ask(await chat.new_session(), "Hi there")
    assert await service.memory.scoped(user_id="maya", agent_id=APP).count() == 2
    await service.aclose()


def test_the_docs_example_runs(fake_models_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    [code] = python_blocks(PAGE)
    assert MODEL_LINE in code, "the example's model line changed; update MODEL_LINE"
    model = ScriptedLlm(answers=["Noted: no peanuts.", "Better not: satay comes with peanut sauce."])
    exec(code.replace(MODEL_LINE, "model = scripted_model\n"), {"scripted_model": model})
    assert "allergic to peanuts" in model.prompt(1) and "PAST_CONVERSATIONS" not in model.prompt(0)
    assert capsys.readouterr().out.splitlines()[-1] == "Better not: satay comes with peanut sauce."
