"""AmemStore through LangGraph's own usage: the BaseStore API (sync and async), the same script run
against LangGraph's InMemoryStore as the reference, a compiled StateGraph whose nodes get the store
injected, and the prebuilt ReAct agent calling memory tools with langchain-core's fake chat model."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field

pytest.importorskip("langgraph")

import langsmith.utils
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_store
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedStore
from langgraph.store.base import BaseStore, GetOp, InvalidNamespaceError, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore

from amem import AsyncMemory, InvalidInput, Memory
from amem.integrations import langgraph as langgraph_adapter
from amem.integrations.langgraph import AmemStore
from tests.conftest import make_memory
from tests.docs_examples import python_blocks

NS = ("alice", "memories")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """LangSmith tracing off (as the docs tell a user) and any outgoing connection a failure."""
    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING_V2", "LANGCHAIN_TRACING"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    langsmith.utils.get_env_var.cache_clear()
    assert not langsmith.utils.tracing_is_enabled()

    for name in ("connect", "connect_ex"):
        original = getattr(socket.socket, name)

        def refuse(self: socket.socket, address: Any, _original: Any = original) -> Any:
            if self.family == socket.AF_UNIX:  # local by definition (the test PostgreSQL's socket)
                return _original(self, address)
            raise AssertionError(f"a network connection was attempted: {address!r}")

        monkeypatch.setattr(socket.socket, name, refuse)
    yield
    langsmith.utils.get_env_var.cache_clear()


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    m = make_memory(tmp_path / "m.db")
    yield m
    m.close()


@pytest.fixture
def store(memory: Memory) -> AmemStore:
    return AmemStore(memory=memory)


def notes_of(memory: Memory) -> list[Any]:
    return memory.scoped().list(limit=1000)


# -- the store API -------------------------------------------------------------------------------------
def test_put_get_returns_exactly_what_was_put(store: AmemStore) -> None:
    value = {"text": "Alice is allergic to peanuts", "n": 3, "x": 1.5, "ok": True, "nested": {"a": [1, "é"]}}
    store.put(NS, "k1", value)
    item = store.get(NS, "k1")
    assert item is not None
    assert (item.namespace, item.key, item.value) == (NS, "k1", value)
    assert item.created_at <= item.updated_at
    assert store.get(NS, "missing") is None
    assert store.get(("alice", "other"), "k1") is None  # another namespace
    assert store.get(("alice",), "k1") is None  # a prefix is not the namespace


def test_put_again_updates_the_same_note_and_delete_removes_it(store: AmemStore, memory: Memory) -> None:
    store.put(NS, "k1", {"text": "Alice is allergic to peanuts"})
    first = store.get(NS, "k1")
    store.put(NS, "k1", {"text": "Alice is allergic to shellfish", "since": 2020})
    notes = notes_of(memory)
    assert len(notes) == 1, "a second put of a key replaces its item"
    note = notes[0]
    assert note.content == "Alice is allergic to shellfish"
    assert note.state.value == "enriched", "changed text is enriched again"
    causes = [v.cause.value for v in memory.scoped().history(note.id)]
    assert causes[-2:] == ["update", "enrich"]  # the earlier version stays in the history
    item = store.get(NS, "k1")
    assert first is not None and item is not None
    assert item.value == {"text": "Alice is allergic to shellfish", "since": 2020}
    assert item.created_at == first.created_at and item.updated_at > first.updated_at
    store.delete(NS, "k1")
    assert store.get(NS, "k1") is None
    assert notes_of(memory) == []
    store.delete(NS, "never-there")  # deleting nothing is no error


@pytest.mark.parametrize("how", ["background", "no llm"])
def test_replace_without_waiting_for_the_llm(tmp_path: Path, how: str) -> None:
    if how == "background":
        memory = make_memory(tmp_path / "m.db", options={"enrich_in_background": True})
    else:
        memory = make_memory(tmp_path / "m.db", llm=None)
    with memory:
        store = AmemStore(memory=memory)
        store.put(NS, "k", {"text": "first text"})
        store.put(NS, "k", {"text": "second text"})
        item = store.get(NS, "k")
        assert item is not None and item.value == {"text": "second text"}
        if how == "background":
            assert memory.background.wait(30)
        (note,) = notes_of(memory)
        assert note.content == "second text"
        assert note.state.value == ("enriched" if how == "background" else "pending")


def test_import_amem_leaves_langgraph_out() -> None:
    code = "import sys, amem, amem.integrations; assert 'langgraph' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_same_text_under_two_keys_is_two_items(store: AmemStore, memory: Memory) -> None:
    store.put(NS, "a", {"text": "likes tea"})
    store.put(NS, "b", {"text": "likes tea"})
    assert len(notes_of(memory)) == 2
    store.delete(NS, "a")
    item = store.get(NS, "b")
    assert item is not None and item.value == {"text": "likes tea"}


def test_note_text_and_scope(memory: Memory) -> None:
    store = AmemStore(memory=memory)
    store.put(("u1",), "a", {"content": "from content", "text": "not this"})
    store.put(("u1",), "b", {"kind": "Memory", "content": {"content": "LangMem's nested content"}})
    store.put(("u1",), "c", {"city": "Lyon", "year": 2024})
    store.put(("u1",), "d", {"title": "T", "body": "B", "text": "ignored"}, index=["title", "body"])
    by_key = {n.metadata["lg_key"]: n for n in notes_of(memory)}
    assert by_key["a"].content == "from content"
    assert by_key["b"].content == "LangMem's nested content"
    assert by_key["c"].content == '{"city": "Lyon", "year": 2024}'
    assert by_key["d"].content == "T\nB"
    assert {n.user_id for n in by_key.values()} == {"u1"}

    fields = AmemStore(memory=memory, index={"fields": ["summary"]})
    fields.put(("u2", "notes"), "e", {"summary": "the summary", "text": "not this"})
    deep = AmemStore(memory=memory, user_depth=1)
    deep.put(("u3", "notes"), "f", {"text": "user is the first label"})
    own = AmemStore(memory=memory.scoped(user_id="owner", agent_id="bot"), user_depth=0)
    own.put(("x", "y"), "g", {"text": "the memory's own user"})
    by_key = {n.metadata["lg_key"]: n for n in notes_of(memory)}
    assert by_key["e"].content == "the summary" and by_key["e"].user_id == "u2.notes"
    assert by_key["f"].user_id == "u3"
    assert (by_key["g"].user_id, by_key["g"].agent_id) == ("owner", "bot")
    assert own.get(("x", "y"), "g") is not None and own.search(("x",)) != []
    assert deep.search(("u3",))[0].key == "f"


def test_search_with_query_filter_limit_and_links(store: AmemStore) -> None:
    store.put(NS, "peanuts", {"text": "Alice is allergic to peanuts", "kind": "health"})
    store.put(NS, "alps", {"text": "Alice went hiking in the Alps", "kind": "hobby"})
    store.put(NS, "tea", {"text": "Alice drinks green tea every morning", "kind": "food"})
    store.put(("alice", "work"), "job", {"text": "Alice works as a nurse", "kind": "work"})
    store.put(("bob", "memories"), "peanuts", {"text": "Bob is allergic to peanuts", "kind": "health"})
    hits = store.search(("alice",), query="allergic to peanuts")
    assert hits[0].key == "peanuts" and hits[0].namespace == NS
    assert isinstance(hits[0].score, float)
    assert all(h.namespace[0] == "alice" for h in hits), "the prefix bounds the search"
    assert {h.namespace for h in hits} == {NS, ("alice", "work")}
    assert len(store.search(("alice",), query="Alice", limit=2)) == 2
    only = store.search(("alice",), query="allergic to peanuts", filter={"kind": {"$ne": "health"}})
    assert only and "peanuts" not in {h.key for h in only}
    assert [h.key for h in store.search((), query="peanuts", filter={"kind": "health"})] != []
    assert {h.namespace[0] for h in store.search((), query="allergic to peanuts")} == {"alice", "bob"}
    page = store.search(NS, query="Alice", limit=2, offset=1)
    assert [h.key for h in page] == [h.key for h in store.search(NS, query="Alice", limit=3)][1:]


def test_unindexed_item_is_listed_but_not_found_by_query(store: AmemStore) -> None:
    store.put(NS, "hidden", {"text": "secret peanut recipe"}, index=False)
    store.put(NS, "shown", {"text": "peanut allergy"})
    assert [h.key for h in store.search(NS, query="peanut")] == ["shown"]
    assert {h.key for h in store.search(NS)} == {"hidden", "shown"}
    assert store.get(NS, "hidden") is not None


def test_refusals(memory: Memory) -> None:
    store = AmemStore(memory=memory)
    assert not store.supports_ttl
    with pytest.raises(NotImplementedError):
        store.put(NS, "k", {"text": "x"}, ttl=5)
    with pytest.raises(NotImplementedError):
        store.batch([PutOp(NS, "k", {"text": "x"}, ttl=5.0)])
    with pytest.raises(NotImplementedError):
        AmemStore(memory=memory, ttl={"default_ttl": 10})
    with pytest.raises(ValueError, match="embedder"):
        AmemStore(memory=memory, index={"dims": 3, "embed": lambda texts: [[0.0] * 3 for _ in texts]})
    with pytest.raises(TypeError):
        AmemStore(memory=memory, llm="fake")
    with pytest.raises(InvalidInput, match="plain JSON"):
        store.put(NS, "k", {"when": object()})
    with pytest.raises(InvalidNamespaceError):
        store.batch([GetOp(("a.b",), "k")])  # a "." would address ("a", "b")
    with pytest.raises(InvalidNamespaceError):
        store.batch([PutOp((), "k", {"text": "x"})])
    with pytest.raises(InvalidNamespaceError):
        store.put(("langgraph",), "k", {"text": "x"})
    store.put(NS, "k", {"n": 1})
    with pytest.raises(ValueError, match="operator"):
        store.search(NS, filter={"n": {"$in": [1]}})


def test_batch_reads_see_the_store_before_its_puts(store: AmemStore) -> None:
    store.put(NS, "k", {"text": "old"})
    got = store.batch(
        [PutOp(NS, "k", {"text": "new"}), GetOp(NS, "k"), PutOp(NS, "k", {"text": "newest"}), SearchOp(NS)]
    )
    assert got[0] is None and got[2] is None
    assert got[1] is not None and got[1].value == {"text": "old"}  # type: ignore[union-attr]
    item = store.get(NS, "k")
    assert item is not None and item.value == {"text": "newest"}


def test_default_store_from_configuration(fake_models_env: None) -> None:
    with AmemStore() as store:
        store.put(NS, "k", {"text": "configured from the environment"})
        path = store.memory.store.url
    with AmemStore() as again:  # the same AMEM_HOME: the item is still there
        item = again.get(NS, "k")
        assert item is not None and item.value == {"text": "configured from the environment"}
        assert again.memory.store.url == path


# -- the same script against LangGraph's reference store --------------------------------------------------
def script(store: BaseStore) -> list[Any]:
    """Writes and reads whose answers do not depend on ranking; items are compared as (ns, key, value)."""

    def items(found: list[Any]) -> list[tuple[Any, ...]]:
        return sorted((i.namespace, i.key, json.dumps(i.value, sort_keys=True)) for i in found)

    data = {
        ("a", "b", "c"): {"k1": {"text": "one", "n": 1, "tag": "x"}, "k2": {"text": "two", "n": 2}},
        ("a", "b", "d", "e"): {"k1": {"text": "three", "n": 3, "meta": {"lang": "fr"}}},
        ("a", "b", "d", "i"): {"k3": {"text": "four", "n": 4, "tags": ["p", "q"]}},
        ("a", "b", "f"): {"k4": {"text": "five", "n": 5}},
        ("a", "c", "f"): {"k5": {"text": "six", "n": 6, "tag": "x"}},
        ("users", "42"): {"profile": {"name": "Ann", "age": 41}},
    }
    for ns, entries in data.items():
        for key, value in entries.items():
            store.put(ns, key, value)
    store.put(("a", "b", "c"), "k2", {"text": "two again", "n": 22})  # replaces
    store.put(("a", "b", "f"), "gone", {"text": "deleted soon"})
    store.delete(("a", "b", "f"), "gone")
    out: list[Any] = []
    for ns, key in [
        (("a", "b", "c"), "k1"),
        (("a", "b", "c"), "k2"),
        (("a", "b", "f"), "gone"),
        (("a", "b", "f"), "k1"),
    ]:
        got = store.get(ns, key)
        out.append(None if got is None else (got.namespace, got.key, got.value))
    for prefix, flt in [
        ((), None),
        (("a",), None),
        (("a", "b"), None),
        (("a", "b", "d"), None),
        (("a",), {"tag": "x"}),
        (("a",), {"n": {"$gt": 2, "$lte": 5}}),
        (("a",), {"n": {"$ne": 1}}),
        (("a",), {"meta": {"lang": "fr"}}),
        (("a",), {"tags": ["p", "q"]}),
        (("users",), {"age": {"$gte": 41}}),
        (("users",), {"age": {"$lt": 41}}),
        (("zzz",), None),
    ]:
        out.append(items(store.search(prefix, filter=flt, limit=100)))
    out.append(len(store.search(("a",), limit=2)))
    out.append(len(store.search(("a",), limit=3, offset=4)))
    for kwargs in [
        {},
        {"prefix": ("a",)},
        {"prefix": ("a", "b")},
        {"suffix": ("f",)},
        {"prefix": ("a", "*", "f")},
        {"prefix": ("a", "*"), "suffix": ("f",)},
        {"suffix": ("d", "*")},
        {"prefix": ("a", "b"), "max_depth": 3},
        {"max_depth": 1},
        {"max_depth": 2, "limit": 2},
        {"limit": 2, "offset": 1},
        {"prefix": ("nope",)},
    ]:
        out.append(store.list_namespaces(**kwargs))
    return out


def test_same_answers_as_langgraphs_in_memory_store(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite and on PostgreSQL, listings read two notes a page (so paging is exercised)."""
    monkeypatch.setattr(langgraph_adapter, "PAGE", 2)
    reference = script(InMemoryStore())
    memory = make_memory(store_url, tmp_path)
    try:
        assert script(AmemStore(memory=memory)) == reference
    finally:
        memory.close()
    assert reference[0] == (("a", "b", "c"), "k1", {"text": "one", "n": 1, "tag": "x"})  # the script reads


def test_an_emptied_namespace_is_no_longer_listed(store: AmemStore) -> None:
    """One difference from InMemoryStore, which keeps listing a namespace after its last item went."""
    store.put(("t", "x"), "k", {"text": "only item"})
    store.delete(("t", "x"), "k")
    assert store.list_namespaces(prefix=("t",)) == []


# -- async: AsyncMemory underneath ---------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_api_runs_on_async_memory(memory: Memory, monkeypatch: pytest.MonkeyPatch) -> None:
    amem = AsyncMemory.wrap(memory)
    store = AmemStore(memory=amem)
    called: list[str] = []
    for name in ("add", "update", "list", "search", "delete", "enrich"):
        original = getattr(AsyncMemory, name)

        async def spy(self: AsyncMemory, *a: Any, _name: str = name, _f: Any = original, **kw: Any) -> Any:
            called.append(_name)
            return await _f(self, *a, **kw)

        monkeypatch.setattr(AsyncMemory, name, spy)
    await store.aput(NS, "k1", {"text": "Alice is allergic to peanuts"})
    await store.aput(NS, "k2", {"text": "Alice likes the Alps"})
    await store.aput(NS, "k1", {"text": "Alice is allergic to shellfish"})
    item = await store.aget(NS, "k1")
    assert item is not None and item.value == {"text": "Alice is allergic to shellfish"}
    hits = await store.asearch(("alice",), query="allergic shellfish")
    assert hits[0].key == "k1" and hits[0].score is not None
    assert {h.key for h in await store.asearch(NS, filter={"text": "Alice likes the Alps"})} == {"k2"}
    assert await store.alist_namespaces() == [NS]
    await store.adelete(NS, "k1")
    assert await store.aget(NS, "k1") is None
    assert {"add", "update", "list", "search", "delete", "enrich"} <= set(called)
    got = await store.abatch([GetOp(NS, "k2"), GetOp(NS, "k1"), SearchOp(NS, query="Alps")])  # side by side
    assert got[0] is not None and got[1] is None and [h.key for h in got[2]] == ["k2"]  # type: ignore[union-attr]


# -- a real graph: the store injected into nodes, recall across threads --------------------------------
class Recorder(FakeMessagesListChatModel):
    """langchain-core's fake chat model, keeping the prompts it was given (and accepting tools)."""

    prompts: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.prompts.append(list(messages))
        return super()._generate(messages, *args, **kwargs)

    def bind_tools(self, tools: Any, **kwargs: Any) -> Recorder:  # type: ignore[override]
        return self


def memory_graph(store: BaseStore, model: Recorder) -> Any:
    def recall(state: MessagesState, *, store: BaseStore) -> dict[str, Any]:
        said = str(state["messages"][-1].content)
        known = store.search(NS, query=said, limit=3)
        lines = "\n".join(str(item.value["text"]) for item in known)
        return {"messages": [SystemMessage(f"Known about the user:\n{lines}")]}

    def remember(state: MessagesState) -> dict[str, Any]:
        said = str(next(m for m in reversed(state["messages"]) if isinstance(m, HumanMessage)).content)
        get_store().put(NS, uuid.uuid4().hex, {"text": said})  # the other way in: get_store()
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState).add_node(recall).add_node(remember)
    graph.add_edge(START, "recall").add_edge("recall", "remember")
    return graph.compile(checkpointer=InMemorySaver(), store=store)


def test_graph_recalls_across_threads(memory: Memory) -> None:
    model = Recorder(responses=[AIMessage("Noted."), AIMessage("Avoid peanuts.")])
    app = memory_graph(AmemStore(memory=memory), model)
    app.invoke(
        {"messages": [HumanMessage("I am allergic to peanuts")]}, {"configurable": {"thread_id": "t1"}}
    )
    # a new thread and a new store object on the same memory: only amem carries the fact over
    app = memory_graph(AmemStore(memory=memory), model)
    out = app.invoke(
        {"messages": [HumanMessage("What should I avoid?")]}, {"configurable": {"thread_id": "t2"}}
    )
    assert out["messages"][-1].content == "Avoid peanuts."
    assert "I am allergic to peanuts" in str(model.prompts[-1][1].content)
    assert len(out["messages"]) == 3  # thread t2 holds only its own turn
    assert {n.content for n in notes_of(memory)} == {"I am allergic to peanuts", "What should I avoid?"}


@pytest.mark.anyio
async def test_graph_async_recalls_across_threads(memory: Memory) -> None:
    model = Recorder(responses=[AIMessage("Noted."), AIMessage("Tea.")])
    store = AmemStore(memory=AsyncMemory.wrap(memory))
    app = memory_graph(store, model)
    await app.ainvoke({"messages": [HumanMessage("I drink green tea")]}, {"configurable": {"thread_id": "a"}})
    await app.ainvoke({"messages": [HumanMessage("What do I drink?")]}, {"configurable": {"thread_id": "b"}})
    assert "I drink green tea" in str(model.prompts[-1][1].content)


# -- the prebuilt ReAct agent with memory tools --------------------------------------------------------
def remember_fact(fact: str, store: Annotated[BaseStore, InjectedStore()]) -> str:
    """Remember a fact about the user."""
    store.put(NS, uuid.uuid4().hex, {"text": fact})
    return "remembered"


def recall_facts(query: str, store: Annotated[BaseStore, InjectedStore()]) -> str:
    """Recall what is known about the user."""
    return "\n".join(str(item.value["text"]) for item in store.search(NS, query=query, limit=3))


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")  # langchain is not installed here
def test_react_agent_with_memory_tools(memory: Memory) -> None:
    from langgraph.prebuilt import create_react_agent

    def call(name: str, args: dict[str, Any]) -> AIMessage:
        return AIMessage("", tool_calls=[{"name": name, "args": args, "id": uuid.uuid4().hex}])

    model = Recorder(
        responses=[
            call("remember_fact", {"fact": "The user's dog is called Rex"}),
            AIMessage("I'll remember that."),
            call("recall_facts", {"query": "dog name"}),
            AIMessage("Your dog is Rex."),
        ]
    )
    store = AmemStore(memory=memory)
    agent = create_react_agent(
        model, [remember_fact, recall_facts], store=store, checkpointer=InMemorySaver()
    )
    agent.invoke({"messages": [HumanMessage("My dog is Rex.")]}, {"configurable": {"thread_id": "1"}})
    out = agent.invoke(
        {"messages": [HumanMessage("What's my dog's name?")]}, {"configurable": {"thread_id": "2"}}
    )
    tool_answer = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert "The user's dog is called Rex" in str(tool_answer.content)
    assert out["messages"][-1].content == "Your dog is Rex."


# -- the docs page's example -----------------------------------------------------------------------------
MODEL_LINES = 'from langchain_openai import ChatOpenAI\nmodel = ChatOpenAI(model="gpt-4.1-mini")\n'


def test_docs_example_runs(fake_models_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks("integrations/langgraph.md")
    example = blocks[0]
    assert MODEL_LINES in example, "the example's model is taken from one marked place"
    model = Recorder(responses=[AIMessage("Noted."), AIMessage("Skip the peanut snacks.")])
    exec(example.replace(MODEL_LINES, "model = fake_model\n"), {"fake_model": model, "__name__": "example"})
    assert capsys.readouterr().out.strip() == "Skip the peanut snacks."
    assert "I'm allergic to peanuts." in str(model.prompts[-1][0].content), "run 2 recalled run 1"
