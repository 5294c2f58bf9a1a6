"""In-process GGUF models through llama-cpp-python: amem works with no key and no network.

The weights come from the model cache (``amem models pull``); llama_cpp is imported lazily so the rest of
amem installs and runs without the optional ``local`` extra.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from pathlib import Path
from typing import Any

from ..errors import LLMError, LLMUnavailable
from ..models import get_spec, model_path
from .base import Completion, Message, Usage

_SEED = 1234
#: llama.cpp rounds smaller contexts up to 256 while llama-cpp-python keeps the smaller buffer, which then
#: crashes on long prompts instead of reporting them; so we never ask for less.
_MIN_CTX = 256
_INSTALL_HINT = "install the local runtime with `pip install 'amem[local]'` (builds llama-cpp-python)"


class _Loaded:
    """One llama.cpp model plus the lock that serialises calls to it (llama contexts are not thread-safe)."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.lock = threading.Lock()


_CACHE: dict[tuple[str, int, int], _Loaded] = {}
_CACHE_LOCK = threading.Lock()


def _load(path: Path, n_ctx: int, n_threads: int, chat_format: str | None) -> _Loaded:
    """Load once per process: a model costs seconds and hundreds of MB, and its KV cache keeps prefixes."""
    key = (str(path), n_ctx, n_threads)
    with _CACHE_LOCK:
        loaded = _CACHE.get(key)
        if loaded is not None:
            return loaded
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LLMUnavailable(f"llama-cpp-python is not installed; {_INSTALL_HINT}") from exc
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # llama.cpp notices, e.g. about the SWA cache
                llama = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    seed=_SEED,
                    chat_format=chat_format,
                    verbose=False,
                )
        except Exception as exc:  # llama raises ValueError/RuntimeError with little detail
            raise LLMUnavailable(f"could not load {path.name} with llama.cpp: {exc}") from exc
        # llama-cpp-python maps ggml's log levels off by one, so WARN lines reach stderr even with
        # verbose=False; Llama() resets the level on every load, hence set it after.
        logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL)
        loaded = _CACHE[key] = _Loaded(llama)
        return loaded


def _default_threads() -> int:
    # llama-cpp-python defaults to half the cores; on the 2-vCPU machines amem targets, 2 threads are ~1.5x
    # faster than 1 (measured). Past ~8 threads generation is memory-bound, so more only adds contention.
    return max(1, min(8, os.cpu_count() or 1))


class LocalLLM:
    """A local GGUF chat model that enforces JSON schemas by grammar-constrained decoding."""

    supports_schema = True

    def __init__(self, name: str, models_dir: str | Path, n_threads: int = 0, n_ctx: int = 4096) -> None:
        self.spec = get_spec(name)
        self.model_id = f"local:{self.spec.name}"
        self.path = model_path(self.spec, models_dir)  # fail fast with a pull hint when missing
        self.n_threads = n_threads or _default_threads()
        self.n_ctx = max(n_ctx, _MIN_CTX)

    def _messages(self, messages: list[Message]) -> list[dict[str, str]]:
        out = [{"role": m.role, "content": m.content} for m in messages]
        if self.spec.chat_format != "gemma":
            return out
        # llama-cpp's "gemma" format silently drops system turns; fold them into the first user turn.
        system = "\n\n".join(m["content"] for m in out if m["role"] == "system")
        rest = [m for m in out if m["role"] != "system"]
        if system:
            first_user = next((i for i, m in enumerate(rest) if m["role"] == "user"), None)
            if first_user is None:
                rest.insert(0, {"role": "user", "content": system})
            else:
                rest[first_user] = {"role": "user", "content": f"{system}\n\n{rest[first_user]['content']}"}
        return rest

    def complete(
        self,
        messages: list[Message],
        schema: dict[str, Any] | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> Completion:
        loaded = _load(self.path, self.n_ctx, self.n_threads, self.spec.chat_format)
        kwargs: dict[str, Any] = {
            "messages": self._messages(messages),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": _SEED,  # per call, so an answer does not depend on what was asked before
        }
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        with loaded.lock:
            try:
                response = loaded.llama.create_chat_completion(**kwargs)
            except ValueError as exc:
                if "exceed context window" in str(exc):
                    raise LLMError(
                        f"prompt too long for {self.model_id}: {exc}; shorten the input or raise n_ctx"
                    ) from exc
                raise LLMUnavailable(f"{self.model_id} failed: {exc}") from exc
            except Exception as exc:
                raise LLMUnavailable(f"{self.model_id} failed: {exc}") from exc
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        completion_tokens = int(usage.get("completion_tokens", 0))
        if choice.get("finish_reason") == "length" and prompt_tokens + completion_tokens >= self.n_ctx:
            # llama-cpp quietly shrinks max_tokens to what fits; a cut-off answer would look like bad output.
            raise LLMError(
                f"prompt ({prompt_tokens} tokens) left no room to answer in {self.model_id}'s "
                f"{self.n_ctx}-token context; shorten the input or raise n_ctx"
            )
        return Completion(
            text=choice["message"].get("content") or "",
            usage=Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens),
            model=self.model_id,
        )
