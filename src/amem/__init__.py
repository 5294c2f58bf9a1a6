"""amem: agentic memory for LLM agents (A-MEM), offline by default."""

from .aio import AsyncMemory
from .config import Settings
from .consolidate import ConsolidationReport, UndoReport
from .errors import (
    AmemError,
    ConfigError,
    EmbedderError,
    InvalidInput,
    LLMError,
    LLMOutputError,
    LLMUnavailable,
    ModelNotAvailable,
    NotFound,
    StoreError,
    StoreUnavailable,
)
from .inputs import MAX_CONTENT_CHARS
from .memory import EnrichReport, Memory, NoteInput
from .notes import (
    EnrichState,
    Link,
    LLMCall,
    Note,
    NoteStatus,
    NoteVersion,
    Scope,
    SearchHit,
    VersionCause,
    Why,
)
from .store import Filters

__version__ = "0.1.0"

__all__ = [
    "MAX_CONTENT_CHARS",
    "AmemError",
    "AsyncMemory",
    "ConfigError",
    "ConsolidationReport",
    "EmbedderError",
    "EnrichReport",
    "EnrichState",
    "Filters",
    "InvalidInput",
    "LLMCall",
    "LLMError",
    "LLMOutputError",
    "LLMUnavailable",
    "Link",
    "Memory",
    "ModelNotAvailable",
    "NotFound",
    "Note",
    "NoteInput",
    "NoteStatus",
    "NoteVersion",
    "Scope",
    "SearchHit",
    "Settings",
    "StoreError",
    "StoreUnavailable",
    "UndoReport",
    "VersionCause",
    "Why",
]
