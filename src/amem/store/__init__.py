"""Stores are chosen by URL: ``sqlite:///path`` (default) or ``postgresql://...`` (scale-out)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import Filters, Store

__all__ = ["Filters", "Store", "open_store"]


def open_store(url: str, pool_size: int = 4, index_memory: str = "1GB") -> Store:
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(Path(url[len("sqlite:///") :]))
    if url == "sqlite://:memory:" or url == ":memory:":
        from .sqlite import SQLiteStore

        return SQLiteStore(":memory:")
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size, index_memory=index_memory)
    if "://" not in url:
        from .sqlite import SQLiteStore

        return SQLiteStore(Path(url).expanduser())
    raise ConfigError(
        f"unknown store URL {url!r}: use sqlite:///PATH, a plain file path, or postgresql://USER@HOST/DB"
    )
