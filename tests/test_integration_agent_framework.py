"""The Microsoft Agent Framework adapter, driven by the framework's own ``Agent`` with a scripted chat
client (a ``BaseChatClient`` that answers from a list and records what the model was sent)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agent_framework", reason="pip install 'amem[agent-framework]'")
from agent_framework import (
    Agent,
    BaseChatClient,
    ChatResponse,
    ChatResponseUpdate,
    Content,
    FunctionInvocationLayer,
    Message,
    ResponseStream,
    prepend_instructions_to_messages,
)

from amem import MAX_CONTENT_CHARS, AsyncMemory
from amem.integrations.agent_framework import AmemContextProvider
from tests.conftest import make_memory
from tests.docs_examples import python_blocks

PAGE = "integrations/agent-framework.md"
#: the example's one swappable place: the chat model
MODEL_LINES = (
    'from agent_framework.openai import OpenAIChatClient\nclient = OpenAIChatClient(model="gpt-4o-mini")\n'
)

pytestmark = pytest.mark.usefixtures("no_network")


class ScriptedChatClient(FunctionInvocationLayer[Any], BaseChatClient[Any]):
    """Canned answers in order; ``requests`` holds every prompt as a real client would send it (the
    run's instructions as the leading system message, then the conversation)."""

    def __init__(self, answers: Sequence[str]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.requests: list[list[Message]] = []

    def _inner_get_response(
        self, *, messages: Sequence[Message], stream: bool, options: Mapping[str, Any], **kwargs: Any
    ) -> Any:
        self.requests.append(prepend_instructions_to_messages(list(messages), options.get("instructions")))
        answer = self.answers.pop(0)
        if stream:

            async def updates() -> AsyncIterator[ChatResponseUpdate]:
                for word in answer.split(" "):
                    yield ChatResponseUpdate(role="assistant", contents=[Content.from_text(word + " ")])

            return ResponseStream(updates(), finalizer=ChatResponse.from_updates)

        async def respond() -> ChatResponse:
            return ChatResponse(messages=[Message("assistant", [answer])])

        return respond()

    def prompt(self, index: int) -> str:
        return "\n".join(f"{m.role}: {m.text}" for m in self.requests[index])

    def system(self, index: int) -> str:
        return "\n".join(m.text for m in self.requests[index] if m.role == "system")


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[AsyncMemory]:
    m = AsyncMemory.wrap(make_memory(tmp_path / "m.db"))
    yield m
    m.sync.close()


def agent(client: ScriptedChatClient, provider: AmemContextProvider) -> Agent[Any]:
    return Agent(client, "You are a helpful assistant.", name="helper", context_providers=[provider])


@pytest.mark.anyio
async def test_a_new_agent_and_session_recall_what_run_one_stored(memory: AsyncMemory) -> None:
    client = ScriptedChatClient(["Noted, no peanuts for you.", "Better skip the satay: peanut sauce."])
    first = agent(client, AmemContextProvider(memory, user_id="maya"))
    session = first.create_session()
    await first.run("I'm allergic to peanuts.", session=session)
    assert "Memories from earlier" not in client.prompt(0)  # nothing to recall yet

    notes = {n.content: n for n in await memory.scoped(user_id="maya").list()}
    said, answered = notes["user: I'm allergic to peanuts."], notes["helper: Noted, no peanuts for you."]
    assert said.metadata == {"source": "agent-framework", "role": "user", "session_id": session.session_id}
    assert answered.metadata["role"] == "assistant" and answered.metadata["author"] == "helper"
    assert said.user_id == "maya" and said.agent_id is None

    second = agent(client, AmemContextProvider(memory, user_id="maya"))  # new agent, new session
    reply = await second.run("Can I order the satay?", session=second.create_session())
    assert reply.text == "Better skip the satay: peanut sauce."
    system = client.system(1)
    assert "Memories from earlier conversations" in system
    assert "user: I'm allergic to peanuts." in system  # run 1's words reached the model's input
    assert "peanuts" not in client.prompt(1).split("user: Can I order")[1]  # not from the user's turn


@pytest.mark.anyio
async def test_the_turn_is_stored_without_waiting_for_enrichment(memory: AsyncMemory) -> None:
    client = ScriptedChatClient(["ok", "ok"])
    await agent(client, AmemContextProvider(memory, user_id="u1")).run("I live in Lyon.")
    await agent(client, AmemContextProvider(memory, user_id="u2", wait=True)).run("I live in Oslo.")
    u1 = {n.content: n.state for n in await memory.scoped(user_id="u1").list()}
    u2 = {n.content: n.state for n in await memory.scoped(user_id="u2").list()}
    assert set(u1) == {"user: I live in Lyon.", "helper: ok"}
    assert set(u2.values()) == {"enriched"}  # wait=True: enriched before the run returned
    assert await memory.wait_background(30)
    assert {n.state for n in await memory.scoped(user_id="u1").list()} == {"enriched"}  # in the background


@pytest.mark.anyio
async def test_scopes_keep_users_apart_and_answers_can_be_left_out(memory: AsyncMemory) -> None:
    client = ScriptedChatClient(["Got it.", "I don't know."])
    await agent(client, AmemContextProvider(memory, user_id="ann", store_answers=False)).run(
        "My locker code is 4411."
    )
    await agent(client, AmemContextProvider(memory, user_id="ben")).run("What is my locker code?")
    assert "4411" not in client.prompt(1)  # ben never sees ann's memories
    assert [n.content for n in await memory.scoped(user_id="ann").list()] == ["user: My locker code is 4411."]
    chef = AmemContextProvider(memory.scoped(user_id="ann"), agent_id="chef")
    assert (chef.memory.scope.user_id, chef.memory.scope.agent_id) == ("ann", "chef")  # not every user's
    with pytest.raises(ValueError, match="view"):
        AmemContextProvider(memory, view="everything")


@pytest.mark.anyio
async def test_a_pasted_document_is_cut_to_the_limit_not_failing_the_run(memory: AsyncMemory) -> None:
    reply = await agent(ScriptedChatClient(["ok"]), AmemContextProvider(memory)).run("word " * 5000)
    assert reply.text == "ok"
    [note] = [n for n in await memory.list() if n.metadata["role"] == "user"]
    assert MAX_CONTENT_CHARS - 2 <= len(note.content) <= MAX_CONTENT_CHARS and note.metadata["truncated"]


@pytest.mark.anyio
async def test_a_streamed_run_is_recalled_and_stored_too(memory: AsyncMemory) -> None:
    await memory.scoped(user_id="maya", agent_id="chef").add("Maya is vegetarian", wait=True)
    client = ScriptedChatClient(["Try the mushroom risotto."])
    provider = AmemContextProvider(memory, user_id="maya", agent_id="chef", view="full", k=3)
    stream = agent(client, provider).run("What should I cook tonight as a vegetarian?", stream=True)
    words = [update.text async for update in stream]
    assert "".join(words).strip() == "Try the mushroom risotto."
    assert "Maya is vegetarian" in client.system(0)
    stored = {n.content for n in await memory.scoped(user_id="maya", agent_id="chef").list()}
    assert "helper: Try the mushroom risotto." in stored


@pytest.mark.anyio
async def test_a_provider_that_opened_its_memory_closes_it(fake_models_env: None) -> None:
    async with AmemContextProvider(user_id="maya") as provider:
        await agent(ScriptedChatClient(["hi"]), provider).run("Hello there")
        assert await provider.memory.count() == 2


def test_the_docs_example_runs(fake_models_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    [code] = python_blocks(PAGE)
    assert MODEL_LINES in code, "the example's model lines changed; update MODEL_LINES"
    client = ScriptedChatClient(["Noted: no peanuts.", "Better not: satay comes with peanut sauce."])
    exec(code.replace(MODEL_LINES, "client = scripted_client\n"), {"scripted_client": client})
    assert "peanut" in client.system(1) and "peanut" not in client.system(0)
    assert capsys.readouterr().out.splitlines()[-1] == "Better not: satay comes with peanut sauce."
