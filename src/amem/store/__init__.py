"""Stores are chosen by URL: ``sqlite:///path`` (default) or ``postgresql://...`` (scale-out)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import Filters, Store

__all__ = ["Filters", "Store", "open_store", "sqlite_path", "store_kind"]

_PG_SCHEMES = ("postgresql://", "postgres://")


def store_kind(url: str) -> str:
    """``"postgresql"`` for a PostgreSQL URL, else ``"sqlite"`` (a file path, ``sqlite:///`` or in-memory)."""
    return "postgresql" if url.startswith(_PG_SCHEMES) else "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The SQLite file a store URL names (``sqlite:///PATH`` or a plain path); None for anything else
    (PostgreSQL, an in-memory database, an unknown scheme)."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    if "://" not in url and url != ":memory:":
        return Path(url).expanduser()
    return None


def open_store(url: str, pool_size: int = 4, index_memory: str = "1GB") -> Store:
    if url == "sqlite://:memory:" or url == ":memory:":
        from .sqlite import SQLiteStore

        return SQLiteStore(":memory:")
    path = sqlite_path(url)
    if path is not None:
        from .sqlite import SQLiteStore

        return SQLiteStore(path)
    if store_kind(url) == "postgresql":
        from .postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size, index_memory=index_memory)
    raise ConfigError(
        f"unknown store URL {url!r}: use sqlite:///PATH, a plain file path, or postgresql://USER@HOST/DB"
    )
