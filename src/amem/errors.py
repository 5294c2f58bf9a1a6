"""One exception root; every message says what the caller can do next."""

from __future__ import annotations


class AmemError(Exception):
    """Root of every error amem raises on purpose."""


class InvalidInput(AmemError, ValueError):
    """The caller gave something amem refuses to store or use; nothing was changed."""


class NotFound(AmemError, KeyError):
    """No such note (or it lives in another scope)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0]) if self.args else "not found"


class ConfigError(AmemError):
    """Configuration is missing or contradictory."""


class LLMError(AmemError):
    """The LLM could not be reached or answered with something unusable."""


class LLMUnavailable(LLMError):
    """The LLM endpoint is unreachable, timed out, or refused the request."""


class LLMOutputError(LLMError):
    """The LLM answered, but not with output that passes validation (even after one repair)."""


class EmbedderError(AmemError):
    """The embedding model failed or is not installed."""


class ModelNotAvailable(AmemError):
    """A local model file is missing from the model cache or failed its checksum."""


class StoreError(AmemError):
    """The database refused an operation or is in a state amem cannot use."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (down, restarting, out of connections); retrying later may work."""
