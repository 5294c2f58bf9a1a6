"""Shared fixtures: a memory on a temporary SQLite file with the fake LLM and the hash embedder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from amem import Memory
from amem.config import Settings
from amem.embed.fake import FakeEmbedder
from amem.llm.fake import FakeLLM


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the developer's shell leaks in, and no test reads or writes the user's ~/.amem."""
    for var in list(os.environ):
        if (var.startswith("AMEM_") and var != "AMEM_TEST_MODELS_DIR") or var == "OPENAI_API_KEY":
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
