"""Configuration, resolved once: explicit argument > AMEM_* environment > config file > default.

Nothing is read at import time; call ``Settings.resolve()`` when a Memory or the CLI starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

DEFAULT_LLM = "local:qwen2.5-coder-1.5b"
DEFAULT_EMBEDDER = "local:all-minilm-l6-v2"


@dataclass(frozen=True)
class Settings:
    """Every knob amem reads from outside.

    Field ``x`` maps to env ``AMEM_X`` and to key ``x`` in ``<home>/config.toml``.
    """

    home: Path = field(default_factory=lambda: Path.home() / ".amem")
    llm: str = DEFAULT_LLM
    embedder: str = DEFAULT_EMBEDDER
    database_url: str = ""  # empty: SQLite at <home>/memory.db
    pipeline: str = "amem"  # "amem" (a call per note), "episode" (a call per episode), "paper" (2 per note)
    episode_turns: int = 12  # episode pipeline: at most this many turns per call
    episode_shift: float = 0.05  # ... a turn this far (cosine under it) from the last ones starts a new one
    retrieval: str = "hybrid"  # "hybrid" or "paper"
    llm_base_url: str = "https://api.openai.com/v1"
    llm_api_key: str = ""
    embedder_base_url: str = "https://api.openai.com/v1"
    embedder_api_key: str = ""
    llm_timeout: float = 120.0
    llm_max_retries: int = 3  # remote LLM: retries of a timed-out, cut or 408/409/429/5xx request
    llm_retry_base: float = 0.5  # remote LLM: first backoff in seconds (doubling, jittered; Retry-After wins)
    llm_cache: bool = True
    llm_threads: int = 0  # 0: let the local runtime decide
    llm_context: int = 4096  # context window of the local LLM, in tokens
    llm_runtime: str = "auto"  # local LLM runtime: xllamacpp (prebuilt), llama-cpp, or auto (first installed)
    llm_parallel: int = 1  # local LLM (xllamacpp): calls decoded together in one batch
    llm_concurrency: int = 1  # scopes enriched side by side (background worker, ingest, enrich of all)
    pool_size: int = 4  # PostgreSQL: connections per process (SQLite uses one)
    index_memory: str = "1GB"  # PostgreSQL: maintenance_work_mem for the HNSW build after a bulk load
    api_keys: str = ""  # `amem serve`: "key1:alice,key2:bob", each key bound to one user
    transfer_dir: str = ""  # the one folder the MCP server's export/import tools may touch (<home>/transfers)
    present_view: str = "content"  # search results as prompt lines: "content" (date and words) or "full"
    enrich_in_background: bool = False  # add returns once stored (pending); a worker thread enriches
    # upkeep (`amem consolidate`); see docs/design.md "Upkeep"
    dedupe: bool = True  # an exact duplicate written into a scope joins the existing note
    link_half_life_days: float = 90.0  # an unused link's weight halves this often (0: no decay)
    prune_below: float = 0.1  # consolidation removes links whose decayed weight is under this
    note_half_life_days: float = 90.0  # recency part of a note's importance halves this often
    archive_below: float = 0.05  # consolidation archives unpinned notes whose importance is under this
    archive_after_days: float = 30.0  # ... and only notes at least this old (0 with archive_below 0: never)
    merge_similarity: float = 0.92  # near duplicates: cosine at or above this go to the LLM to confirm
    consolidate_every: float = 0.0  # `amem serve`: hours between scheduled consolidations (0: never)

    @property
    def db_path(self) -> Path:
        return self.home / "memory.db"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def transfers_path(self) -> Path:
        return Path(self.transfer_dir).expanduser() if self.transfer_dir else self.home / "transfers"

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.db_path}"

    @classmethod
    def resolve(
        cls,
        overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> Settings:
        env = os.environ if env is None else env
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        names = {f.name: f for f in fields(cls)}
        unknown = set(overrides) - set(names)
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(names)}")

        env = {k: v for k, v in env.items() if not (k.startswith("AMEM_") and v == "")}  # empty = unset
        home_raw = overrides.get("home") or env.get("AMEM_HOME")
        home = Path(home_raw).expanduser() if home_raw else cls().home
        named = config_file or (Path(env["AMEM_CONFIG"]) if env.get("AMEM_CONFIG") else None)
        path = named or home / "config.toml"
        if named is not None and not path.is_file():
            raise ConfigError(f"config file {path} does not exist; create it or unset AMEM_CONFIG")
        from_file: dict[str, Any] = {}
        if path.is_file():
            try:
                from_file = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}; fix or remove it") from exc
            if "home" in from_file:
                raise ConfigError(f"{path}: 'home' cannot be set in the config file; use AMEM_HOME or --home")
            bad = set(from_file) - set(names)
            if bad:
                raise ConfigError(f"{path}: unknown key(s) {sorted(bad)}; known: {sorted(names)}")

        values: dict[str, Any] = {"home": home}
        for name in names:
            if name == "home":
                continue
            if name in overrides:
                raw: Any = overrides[name]
            elif f"AMEM_{name.upper()}" in env:
                raw = env[f"AMEM_{name.upper()}"]
            elif name in from_file:
                raw = from_file[name]
            else:
                continue
            values[name] = _coerce(name, raw, type(getattr(cls(), name)))
        # Provider keys: fall back to the conventional variable so an OpenAI user needs no extra setup.
        for key_field in ("llm_api_key", "embedder_api_key"):
            if key_field not in values and env.get("OPENAI_API_KEY"):
                values[key_field] = env["OPENAI_API_KEY"]
        settings = replace(cls(), **values)
        if settings.pipeline not in ("amem", "episode", "paper"):
            raise ConfigError(f"pipeline must be 'amem', 'episode' or 'paper', not {settings.pipeline!r}")
        if settings.episode_turns < 1:
            raise ConfigError(f"episode_turns must be 1 or more, not {settings.episode_turns}")
        if settings.present_view not in ("full", "content"):
            raise ConfigError(f"present_view must be 'full' or 'content', not {settings.present_view!r}")
        if settings.llm_runtime not in ("auto", "xllamacpp", "llama-cpp"):
            raise ConfigError(
                f"llm_runtime must be 'auto', 'xllamacpp' or 'llama-cpp', not {settings.llm_runtime!r}"
            )
        for name in ("prune_below", "archive_below", "merge_similarity"):
            if not 0.0 <= getattr(settings, name) <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, not {getattr(settings, name)}")
        for name in (
            "link_half_life_days",
            "note_half_life_days",
            "archive_after_days",
            "consolidate_every",
            "llm_max_retries",
            "llm_retry_base",
        ):
            if getattr(settings, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, not {getattr(settings, name)}")
        if settings.retrieval not in ("hybrid", "paper"):
            raise ConfigError(f"retrieval must be 'hybrid' or 'paper', not {settings.retrieval!r}")
        return settings


def _coerce(name: str, raw: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true/false, got {raw!r}")
    if kind in (int, float):
        if isinstance(raw, bool):
            raise ConfigError(f"{name}: expected a number, got {raw!r}")
        try:
            value = float(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from exc
        if kind is int:
            if not value.is_integer():
                raise ConfigError(f"{name}: expected a whole number, got {raw!r}")
            return int(value)
        return value
    if kind is Path or isinstance(raw, Path):
        return Path(str(raw)).expanduser()
    return str(raw)
