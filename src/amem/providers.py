"""The one place a model string ("provider:model") becomes an LLM or an Embedder.

Keeping the parsing here means the CLI, config files and the Python API all accept exactly the same specs,
and heavy providers (llama.cpp, onnxruntime) are imported only when chosen.
"""

from __future__ import annotations

from .config import Settings
from .embed.base import Embedder
from .errors import ConfigError, ModelNotAvailable
from .llm.base import LLM
from .models import EMBEDDER_NAME, resolve_name

DEFAULT_LOCAL_LLM = "qwen2.5-coder-1.5b"

LLM_FORMS = "local[:<model>] (e.g. local:qwen2.5-coder-1.5b, local:gemma-3-270m), openai:<model>, fake"
EMBEDDER_FORMS = f"local[:{EMBEDDER_NAME}], openai:<model>, fake[:<dimensions>]"


def _split(spec: str) -> tuple[str, str]:
    provider, _, model = spec.strip().partition(":")
    return provider.strip().lower(), model.strip()


def make_llm(spec: str, settings: Settings) -> LLM:
    provider, model = _split(spec)
    if provider == "local":
        from .llm.local import LocalLLM

        try:
            name = resolve_name(model or DEFAULT_LOCAL_LLM)
        except ModelNotAvailable as exc:
            raise ConfigError(f"LLM {spec!r}: {exc}") from exc
        return LocalLLM(
            name,
            settings.models_dir,
            n_threads=settings.llm_threads,
            n_ctx=settings.llm_context,
            runtime=settings.llm_runtime,
            parallel=settings.llm_parallel,
        )
    if provider == "openai":
        if not model:
            raise ConfigError(f"LLM {spec!r} names no model; use openai:<model>, e.g. openai:gpt-4o-mini")
        from .llm.openai_compat import OpenAICompatLLM

        return OpenAICompatLLM(
            model,
            settings.llm_base_url,
            settings.llm_api_key,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            retry_base=settings.llm_retry_base,
        )
    if provider == "fake":
        from .llm.fake import FakeLLM

        return FakeLLM()
    raise ConfigError(f"unknown LLM {spec!r}; valid forms: {LLM_FORMS}")


def make_embedder(spec: str, settings: Settings) -> Embedder:
    provider, model = _split(spec)
    if provider == "local":
        if model and model.lower() != EMBEDDER_NAME:
            raise ConfigError(f"unknown local embedder {model!r}; the local embedder is {EMBEDDER_NAME}")
        from .embed.local import MiniLMEmbedder

        return MiniLMEmbedder()
    if provider == "openai":
        if not model:
            raise ConfigError(
                f"embedder {spec!r} names no model; use openai:<model>, e.g. openai:text-embedding-3-small"
            )
        from .embed.openai_compat import OpenAICompatEmbedder

        return OpenAICompatEmbedder(model, settings.embedder_base_url, settings.embedder_api_key)
    if provider == "fake":
        from .embed.fake import FakeEmbedder

        if not model:
            return FakeEmbedder()
        try:
            dimensions = int(model)
        except ValueError:
            dimensions = 0
        if dimensions <= 0:
            raise ConfigError(f"embedder {spec!r}: fake:<dimensions> needs a positive integer")
        return FakeEmbedder(dimensions=dimensions)
    raise ConfigError(f"unknown embedder {spec!r}; valid forms: {EMBEDDER_FORMS}")
