"""The HTTP status and error kind of each library error, shared by amem's REST API and its mem0 dialect."""

from __future__ import annotations

from ..errors import (
    AmemError,
    ConfigError,
    EmbedderError,
    InvalidInput,
    LLMError,
    ModelNotAvailable,
    NotFound,
    StoreError,
    StoreUnavailable,
)

STATUS: dict[type[AmemError], tuple[int, str]] = {
    InvalidInput: (400, "invalid_input"),
    ConfigError: (400, "invalid_input"),
    NotFound: (404, "not_found"),
    StoreUnavailable: (503, "store_unavailable"),
    StoreError: (409, "store_conflict"),
    LLMError: (502, "llm_unavailable"),
    EmbedderError: (503, "embedder_unavailable"),
    ModelNotAvailable: (503, "model_not_available"),
}


def status_of(exc: AmemError) -> tuple[int, str]:
    """The first match in order (StoreUnavailable before its parent StoreError); 500 for anything else."""
    return next(((s, k) for cls, (s, k) in STATUS.items() if isinstance(exc, cls)), (500, "error"))
