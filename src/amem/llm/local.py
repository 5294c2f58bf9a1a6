"""In-process GGUF models: amem works with no key and no network.

Two llama.cpp runtimes can run them: ``xllamacpp`` (a prebuilt wheel: nothing to compile; extra
``local``) and ``llama-cpp-python`` (built from source on install; extra ``llama-cpp``).
``llm_runtime`` picks one; ``auto`` takes the first installed. The weights come from the model cache
(``amem models pull``); the runtime is imported lazily, so the rest of amem installs and runs without it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError, LLMError, LLMUnavailable
from ..models import get_spec, model_path
from .base import Completion, Message, Usage

_SEED = 1234
#: llama.cpp rounds smaller contexts up to 256 while llama-cpp-python keeps the smaller buffer, which then
#: crashes on long prompts instead of reporting them; so we never ask for less.
_MIN_CTX = 256
RUNTIMES = ("auto", "xllamacpp", "llama-cpp")
_INSTALL_HINT = (
    "install a local runtime: `pip install 'amem[local]'` (xllamacpp, prebuilt) or "
    "`pip install 'amem[llama-cpp]'` (llama-cpp-python, compiled on install)"
)


class _TooLong(Exception):
    """The prompt does not fit the model's context."""


class _Backend(Protocol):
    def chat(self, request: dict[str, Any]) -> dict[str, Any]: ...


class _LlamaCpp:
    """llama-cpp-python: a ``Llama`` object in this process."""

    def __init__(
        self, path: Path, n_ctx: int, n_threads: int, chat_format: str | None, slots: int = 1
    ) -> None:
        from llama_cpp import Llama

        if slots != 1:
            raise ConfigError("llm_parallel > 1 needs the xllamacpp runtime (llama-cpp-python runs one call)")

        with contextlib.redirect_stderr(io.StringIO()):  # llama.cpp notices, e.g. about the SWA cache
            self.llama = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                seed=_SEED,
                chat_format=chat_format,
                verbose=False,
            )
        # llama-cpp-python maps ggml's log levels off by one, so WARN lines reach stderr even with
        # verbose=False; Llama() resets the level on every load, hence set it after.
        logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL)

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            response: Any = self.llama.create_chat_completion(**request)  # not streamed: one dict
            return dict(response)
        except ValueError as exc:
            if "exceed context window" in str(exc):
                raise _TooLong(str(exc)) from exc
            raise


class _XLlamaCpp:
    """xllamacpp: llama.cpp's server loop in this process, called directly (no HTTP). It also listens on
    a random 127.0.0.1 port, which we lock with a random API key nobody is told."""

    def __init__(
        self, path: Path, n_ctx: int, n_threads: int, chat_format: str | None, slots: int = 1
    ) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx * slots  # each slot gets the whole window
        params.n_parallel = slots  # calls decoded together, one batch per step
        params.cpuparams.n_threads = n_threads
        params.cpuparams_batch.n_threads = n_threads
        params.sampling.seed = _SEED
        params.warmup = False
        params.verbosity = -1  # llama.cpp's own log lines stay off stderr
        params.api_keys = [secrets.token_hex(24)]
        if chat_format:  # the template llama-cpp-python applies too (llama.cpp knows it by name)
            params.use_jinja = False
            params.chat_template = chat_format
        self.server = xllamacpp.Server(params)

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        response = self.server.handle_chat_completions(request)
        error = response.get("error") if isinstance(response, dict) else None
        if error:
            message = error.get("message", error) if isinstance(error, dict) else error
            if isinstance(error, dict) and error.get("type") == "exceed_context_size_error":
                raise _TooLong(str(message))
            raise RuntimeError(str(message))
        return dict(response)


class _Loaded:
    """One model plus what bounds the calls in flight to its slots (a llama context is not thread-safe;
    xllamacpp's server queues and batches up to ``slots`` calls itself)."""

    def __init__(self, backend: _Backend, runtime: str, slots: int) -> None:
        self.backend = backend
        self.runtime = runtime
        self.lock = threading.BoundedSemaphore(slots)


_CACHE: dict[tuple[str, str, int, int, int], _Loaded] = {}
_CACHE_LOCK = threading.Lock()
_BACKENDS: dict[str, tuple[str, Callable[[Path, int, int, str | None, int], _Backend]]] = {
    "xllamacpp": ("xllamacpp", _XLlamaCpp),
    "llama-cpp": ("llama_cpp", _LlamaCpp),
}


def resolve_runtime(runtime: str) -> str:
    """The runtime ``runtime`` stands for here: ``auto`` is the first installed of xllamacpp, llama-cpp."""
    import importlib.util

    if runtime not in RUNTIMES:
        raise ConfigError(f"llm_runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    wanted = ["xllamacpp", "llama-cpp"] if runtime == "auto" else [runtime]
    for name in wanted:
        if importlib.util.find_spec(_BACKENDS[name][0]) is not None:
            return name
    if runtime == "auto":
        raise LLMUnavailable(f"no local LLM runtime is installed; {_INSTALL_HINT}")
    module = _BACKENDS[runtime][0]
    package = "xllamacpp" if runtime == "xllamacpp" else "llama-cpp-python"
    raise LLMUnavailable(f"llm_runtime {runtime!r} needs {package} ({module}): pip install {package}")


def _load(
    runtime: str, path: Path, n_ctx: int, n_threads: int, chat_format: str | None, slots: int
) -> _Loaded:
    """Load once per process: a model costs seconds and hundreds of MB, and its KV cache keeps prefixes."""
    key = (runtime, str(path), n_ctx, n_threads, slots)
    with _CACHE_LOCK:
        loaded = _CACHE.get(key)
        if loaded is not None:
            return loaded
        try:
            backend = _BACKENDS[runtime][1](path, n_ctx, n_threads, chat_format, slots)
        except ImportError as exc:
            raise LLMUnavailable(
                f"the {runtime} runtime could not be imported ({exc}); {_INSTALL_HINT}"
            ) from exc
        except ConfigError:
            raise
        except Exception as exc:  # both raise ValueError/RuntimeError with little detail
            raise LLMUnavailable(f"could not load {path.name} with {runtime}: {exc}") from exc
        loaded = _CACHE[key] = _Loaded(backend, runtime, slots)
        return loaded


def closed(schema: Any) -> Any:
    """``schema`` with every object closed to properties it does not name. llama-cpp-python's grammar
    closes them already; llama.cpp's own converter (xllamacpp) lets the model add keys ("c_id", "links"
    where no link may be made), which costs tokens and invites invention."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _default_threads() -> int:
    # On the 2-vCPU machines amem targets, 2 threads are ~1.5x faster than 1 (measured, machine idle).
    # Past ~8 threads generation is memory-bound, so more only adds contention.
    return max(1, min(8, os.cpu_count() or 1))


class LocalLLM:
    """A local GGUF chat model that enforces JSON schemas by grammar-constrained decoding, on the
    ``runtime`` asked for (``auto``: xllamacpp when installed, else llama-cpp-python)."""

    supports_schema = True

    def __init__(
        self,
        name: str,
        models_dir: str | Path,
        n_threads: int = 0,
        n_ctx: int = 4096,
        runtime: str = "auto",
        parallel: int = 1,
    ) -> None:
        self.spec = get_spec(name)
        self.model_id = f"local:{self.spec.name}"
        self.path = model_path(self.spec, models_dir)  # fail fast with a pull hint when missing
        self.n_threads = n_threads or _default_threads()
        self.n_ctx = max(n_ctx, _MIN_CTX)
        if runtime not in RUNTIMES:
            raise ConfigError(f"llm_runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        self._runtime = runtime  # resolved on the first call: a memory opens (and stores) without one
        self._resolved = False
        self.parallel = max(1, parallel)

    @property
    def runtime(self) -> str:
        """The runtime that runs this model (``auto`` resolved); LLMUnavailable when none is installed."""
        if not self._resolved:  # once: is it installed (and which, for auto)
            self._runtime, self._resolved = resolve_runtime(self._runtime), True
        return self._runtime

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
        loaded = _load(
            self.runtime,
            self.path,
            self.n_ctx,
            self.n_threads,
            self.spec.chat_format,
            self.parallel,
        )
        request: dict[str, Any] = {
            "messages": self._messages(messages),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": _SEED,  # per call, so an answer does not depend on what was asked before
        }
        if schema is not None:
            request["response_format"] = {"type": "json_object", "schema": closed(schema)}
        with loaded.lock:
            try:
                response = loaded.backend.chat(request)
            except _TooLong as exc:
                raise LLMError(
                    f"prompt too long for {self.model_id}: {exc}; shorten the input or raise n_ctx"
                ) from exc
            except Exception as exc:
                raise LLMUnavailable(f"{self.model_id} ({self.runtime}) failed: {exc}") from exc
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
