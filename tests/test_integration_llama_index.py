"""The LlamaIndex memory block, inside LlamaIndex's own ``Memory`` and driven by its own agent and chat
engine with its mock LLMs, which record the messages they were sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'amem[llama-index]'")
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms.mock import (
    MockFunctionCallingLLMWithChatMemoryOfLastCall,
    MockLLMWithChatMemoryOfLastCall,
)
from llama_index.core.memory import Memory

from amem import MAX_CONTENT_CHARS, AsyncMemory
from amem.integrations.llama_index import AmemMemoryBlock, save_session
from tests.conftest import make_memory
from tests.docs_examples import python_blocks

# FunctionAgent's workflow lists its own members with inspect, touching pydantic's deprecated attributes
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect"),
    pytest.mark.usefixtures("no_network"),
]

PAGE = "integrations/llama-index.md"
MODEL_LINES = (
    "from llama_index.llms.openai import OpenAI  # pip install llama-index-llms-openai\n"
    'llm = OpenAI(model="gpt-4.1-mini")\n'
)


@pytest.fixture
def amem(tmp_path: Path) -> Iterator[AsyncMemory]:
    m = AsyncMemory.wrap(make_memory(tmp_path / "m.db"))
    yield m
    m.sync.close()


def system_text(messages: Any) -> str:
    return "\n".join(str(m.content) for m in messages if m.role == "system")


@pytest.mark.anyio
async def test_a_function_agent_remembers_across_two_sessions(amem: AsyncMemory) -> None:
    alice = amem.scoped(user_id="alice")
    llm = MockFunctionCallingLLMWithChatMemoryOfLastCall()
    agent = FunctionAgent(llm=llm, system_prompt="You are Alice's assistant.")

    monday = Memory.from_defaults(session_id="monday", memory_blocks=[AmemMemoryBlock(memory=alice)])
    await agent.run("My favourite tea is sencha.", memory=monday)
    assert "<long_term_memory>" not in system_text(llm.last_chat_messages)  # nothing known yet
    await save_session(monday)
    notes = {n.content: n for n in await alice.list()}
    user_note = notes["user: My favourite tea is sencha."]
    assert user_note.metadata == {"role": "user", "session_id": "monday"}
    assert user_note.user_id == "alice"
    assert "assistant: My favourite tea is sencha." in notes  # the mock echoes the user

    tuesday = Memory.from_defaults(session_id="tuesday", memory_blocks=[AmemMemoryBlock(memory=alice)])
    await agent.run("Which tea should I buy for myself?", memory=tuesday)
    sent = llm.last_chat_messages
    assert [m.role for m in sent] == ["system", "system", "user"]
    assert sent[-1].content == "Which tea should I buy for myself?"
    block = system_text(sent)
    assert "<long_term_memory>" in block and "user: My favourite tea is sencha." in block
    # another user's session sees none of it
    bob = Memory.from_defaults(memory_blocks=[AmemMemoryBlock(memory=amem.scoped(user_id="bob"))])
    await agent.run("Which tea should I buy for myself?", memory=bob)
    assert "sencha" not in system_text(llm.last_chat_messages)


@pytest.mark.anyio
async def test_a_pasted_document_is_kept_truncated_not_refused(amem: AsyncMemory) -> None:
    session = Memory.from_defaults(memory_blocks=[AmemMemoryBlock(memory=amem)])
    await session.aput_messages([ChatMessage(role="user", content="lorem ipsum " * 3000)])
    await save_session(session)  # 36,000 characters: over amem's limit for one note
    (note,) = await amem.list()
    assert len(note.content) == MAX_CONTENT_CHARS and note.metadata["truncated"] is True


@pytest.mark.anyio
async def test_save_session_twice_adds_no_second_note(amem: AsyncMemory) -> None:
    session = Memory.from_defaults(memory_blocks=[AmemMemoryBlock(memory=amem)])
    await session.aput_messages(
        [
            ChatMessage(role="system", content="You are terse."),
            ChatMessage(role="user", content="I moved to Lisbon in March."),
            ChatMessage(role="tool", content='{"weather": "sunny"}'),
            ChatMessage(role="assistant", content="   "),
        ]
    )
    await save_session(session)
    await save_session(session)
    # system prompts, tool output and empty messages are not memories
    assert [n.content for n in await amem.list()] == ["user: I moved to Lisbon in March."]


def test_overflow_of_the_short_term_queue_flows_into_amem_with_a_sync_chat_engine(tmp_path: Path) -> None:
    """LlamaIndex's own waterfall: a small token limit makes the queue hand its oldest turns to the block;
    a chat engine on a fresh session then gets them back from amem."""
    with make_memory(tmp_path / "m.db") as plain:  # a plain Memory is accepted too
        llm = MockLLMWithChatMemoryOfLastCall(max_tokens=2)  # answers "text text"
        session = Memory.from_defaults(
            memory_blocks=[AmemMemoryBlock(memory=plain, wait=True)], token_limit=40, token_flush_size=10
        )
        engine = SimpleChatEngine.from_defaults(llm=llm, memory=session)
        for text in (
            "My sister Ana is a pilot.",
            "I play the cello on Sundays.",
            "Tell me a joke.",
            "Thanks!",
        ):
            engine.chat(text)
        stored = [n.content for n in plain.list()]
        assert "user: My sister Ana is a pilot." in stored  # flushed by LlamaIndex, not by us
        assert all(n.state == "enriched" for n in plain.list())  # wait=True: enriched before returning

        fresh = SimpleChatEngine.from_defaults(
            llm=llm, memory=Memory.from_defaults(memory_blocks=[AmemMemoryBlock(memory=plain)])
        )
        fresh.chat("What does my sister do for a living?")
        assert "user: My sister Ana is a pilot." in system_text(llm.last_chat_messages)


@pytest.mark.anyio
async def test_the_query_is_the_latest_messages_and_no_hit_means_no_block(amem: AsyncMemory) -> None:
    await amem.add("user: Ana is a pilot")
    await amem.add("user: The cat is called Miso")
    block = AmemMemoryBlock(memory=amem, k=1, query_messages=1, view="content")
    older = ChatMessage(role="user", content="Miso the cat")
    newer = ChatMessage(role="user", content="what does Ana fly, as a pilot")
    # the best hit comes first (linked notes may follow it)
    assert "Ana is a pilot" in (await block.aget([older, newer])).splitlines()[0]
    assert "Miso" in (await block.aget([newer, older])).splitlines()[0]
    assert await block.aget([ChatMessage(role="system", content="pilot")]) == ""  # not a role it reads
    assert await block.aget([]) == ""
    session = Memory.from_defaults(memory_blocks=[block])
    assert system_text(await session.aget()) == ""  # nothing to search with: no memory message at all


@pytest.mark.anyio
async def test_truncation_drops_the_weakest_lines(amem: AsyncMemory) -> None:
    block = AmemMemoryBlock(memory=amem, priority=1)
    content = "\n".join(f"[1 May 2025 (Thursday)] line {i} " + "x" * 30 for i in range(4))
    kept = await block.atruncate(content, 12)
    assert kept is not None and kept.splitlines() == content.splitlines()[:3]
    assert await block.atruncate(content, 10_000) is None


def test_the_docs_example_runs(fake_models_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    code = python_blocks(PAGE)[0]
    assert code.count(MODEL_LINES) == 1, "the docs example must take its model from the marked lines"
    llm = MockFunctionCallingLLMWithChatMemoryOfLastCall()
    exec(compile(code.replace(MODEL_LINES, "llm = mock\n"), PAGE, "exec"), {"mock": llm})
    sent = llm.last_chat_messages
    assert sent[-1].content == "Which tea should I buy for myself?"
    assert "user: My favourite tea is sencha." in system_text(sent)
