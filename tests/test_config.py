"""Settings.resolve: explicit override > AMEM_* environment > config.toml > default, with clear errors."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amem.config import DEFAULT_EMBEDDER, DEFAULT_LLM, Settings
from amem.errors import AmemError, ConfigError


@pytest.fixture(autouse=True)
def _env_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A home of its own, apart from the ones the tests write config files into (conftest cleans the env)."""
    monkeypatch.setenv("AMEM_HOME", str(tmp_path / "env-home"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def write_config(home: Path, text: str) -> Path:
    path = home / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def resolve(home: Path, overrides: dict | None = None, **env: str) -> Settings:
    return Settings.resolve(overrides, env={"AMEM_HOME": str(home), **env})


# -- precedence ------------------------------------------------------------------------------------


def test_defaults_when_nothing_is_set(home: Path) -> None:
    s = resolve(home)
    assert s.home == home
    assert s.llm == DEFAULT_LLM
    assert s.embedder == DEFAULT_EMBEDDER
    assert s.pipeline == "amem"
    assert s.retrieval == "hybrid"
    assert s.llm_cache is True
    assert s.llm_timeout == 120.0
    assert s.llm_threads == 0
    assert s.llm_api_key == "" and s.embedder_api_key == ""
    assert s.db_path == home / "memory.db"
    assert s.models_dir == home / "models"
    assert s.store_url == f"sqlite:///{home / 'memory.db'}"


def test_default_home_is_dot_amem_in_the_user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = Settings.resolve(env={})  # HOME has no .amem/config.toml
    assert s.home == tmp_path / ".amem"


def test_config_file_beats_default(home: Path) -> None:
    write_config(home, 'llm = "fake"\nllm_timeout = 5\nllm_cache = false\npipeline = "paper"\n')
    s = resolve(home)
    assert (s.llm, s.llm_timeout, s.llm_cache, s.pipeline) == ("fake", 5.0, False, "paper")
    assert isinstance(s.llm_timeout, float)
    assert s.embedder == DEFAULT_EMBEDDER  # untouched keys keep their default


def test_env_beats_config_file(home: Path) -> None:
    write_config(home, 'llm = "fake"\nembedder = "fake:32"\n')
    s = resolve(home, AMEM_LLM="openai:gpt-4o-mini")
    assert s.llm == "openai:gpt-4o-mini"
    assert s.embedder == "fake:32"


def test_explicit_override_beats_env_and_file(home: Path) -> None:
    write_config(home, 'llm = "fake"\npipeline = "paper"\n')
    s = resolve(
        home, {"llm": "none", "pipeline": "amem"}, AMEM_LLM="openai:gpt-4o-mini", AMEM_PIPELINE="paper"
    )
    assert s.llm == "none"
    assert s.pipeline == "amem"


def test_none_override_falls_through_to_env(home: Path) -> None:
    s = resolve(home, {"llm": None, "embedder": None}, AMEM_LLM="fake")
    assert s.llm == "fake"
    assert s.embedder == DEFAULT_EMBEDDER


def test_home_override_beats_amem_home(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    write_config(other, 'llm = "fake"\n')
    s = Settings.resolve({"home": other}, env={"AMEM_HOME": str(home)})
    assert s.home == other
    assert s.llm == "fake"  # the config file is looked up in the overriding home


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = Settings.resolve(env={"AMEM_HOME": "~/mem"})
    assert s.home == tmp_path / "mem"


def test_amem_config_env_names_another_file(home: Path, tmp_path: Path) -> None:
    write_config(home, 'llm = "fake"\n')
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text('llm = "none"\n', encoding="utf-8")
    assert resolve(home, AMEM_CONFIG=str(elsewhere)).llm == "none"


def test_config_file_argument(home: Path, tmp_path: Path) -> None:
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('retrieval = "paper"\n', encoding="utf-8")
    s = Settings.resolve(env={"AMEM_HOME": str(home)}, config_file=explicit)
    assert s.retrieval == "paper"


def test_resolve_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("AMEM_HOME", str(home))
    monkeypatch.setenv("AMEM_LLM", "fake")
    s = Settings.resolve()
    assert s.home == home
    assert s.llm == "fake"


def test_settings_are_frozen(home: Path) -> None:
    s = resolve(home)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.llm = "fake"  # type: ignore[misc]


# -- coercion --------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "off", " OFF "])
def test_false_strings(home: Path, raw: str) -> None:
    assert resolve(home, AMEM_LLM_CACHE=raw).llm_cache is False


@pytest.mark.parametrize("raw", ["1", "true", "yes", "on", "TRUE"])
def test_true_strings(home: Path, raw: str) -> None:
    assert resolve(home, {"llm_cache": raw}).llm_cache is True


def test_bool_from_toml(home: Path) -> None:
    write_config(home, "llm_cache = false\n")
    assert resolve(home).llm_cache is False


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled"])
def test_bad_bool_is_a_config_error(home: Path, raw: str) -> None:
    with pytest.raises(ConfigError, match="llm_cache"):
        resolve(home, AMEM_LLM_CACHE=raw)


def test_bad_bool_in_config_file(home: Path) -> None:
    write_config(home, 'llm_cache = "sometimes"\n')
    with pytest.raises(ConfigError, match="llm_cache"):
        resolve(home)


def test_numbers_are_coerced(home: Path) -> None:
    s = resolve(home, AMEM_LLM_TIMEOUT="2.5", AMEM_LLM_THREADS="4")
    assert s.llm_timeout == 2.5 and isinstance(s.llm_timeout, float)
    assert s.llm_threads == 4 and isinstance(s.llm_threads, int)


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("AMEM_LLM_TIMEOUT", "fast"),
        ("AMEM_LLM_THREADS", "4.5"),
        ("AMEM_LLM_THREADS", "four"),
        ("AMEM_LLM_TIMEOUT", "1e"),
    ],
)
def test_bad_number_is_a_config_error(home: Path, var: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=var[len("AMEM_") :].lower()):
        resolve(home, **{var: raw})


def test_bad_number_in_config_file(home: Path) -> None:
    write_config(home, 'llm_timeout = "soon"\n')
    with pytest.raises(ConfigError, match="llm_timeout"):
        resolve(home)


def test_float_for_int_field_in_config_file_is_rejected(home: Path) -> None:
    write_config(home, "llm_threads = 2.7\n")
    with pytest.raises(ConfigError, match="llm_threads"):
        resolve(home)


def test_bool_for_number_field_in_config_file_is_rejected(home: Path) -> None:
    write_config(home, "llm_timeout = true\n")
    with pytest.raises(ConfigError, match="llm_timeout"):
        resolve(home)


# -- config file errors ----------------------------------------------------------------------------


def test_unknown_key_in_config_file(home: Path) -> None:
    write_config(home, 'llm = "fake"\nllm_modle = "typo"\n')
    with pytest.raises(ConfigError, match="llm_modle"):
        resolve(home)


def test_invalid_toml_is_a_config_error(home: Path) -> None:
    path = write_config(home, "llm = \n")
    with pytest.raises(ConfigError, match=str(path.name)):
        resolve(home)


def test_unknown_override_is_a_config_error(home: Path) -> None:
    with pytest.raises(ConfigError, match="colour"):
        resolve(home, {"colour": "blue"})


def test_config_error_is_an_amem_error() -> None:
    assert issubclass(ConfigError, AmemError)


def test_home_in_config_file_is_not_silently_ignored(home: Path, tmp_path: Path) -> None:
    write_config(home, f'home = "{tmp_path / "elsewhere"}"\n')
    try:
        s = resolve(home)
    except ConfigError:
        return  # rejecting the key is fine too
    assert s.home == tmp_path / "elsewhere"


def test_missing_explicit_config_file_is_an_error(home: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        resolve(home, AMEM_CONFIG=str(tmp_path / "typo.toml"))


# -- API keys --------------------------------------------------------------------------------------


def test_openai_api_key_fallback(home: Path) -> None:
    s = resolve(home, OPENAI_API_KEY="sk-openai")
    assert s.llm_api_key == "sk-openai"
    assert s.embedder_api_key == "sk-openai"


def test_amem_keys_beat_openai_api_key(home: Path) -> None:
    s = resolve(home, OPENAI_API_KEY="sk-openai", AMEM_LLM_API_KEY="sk-amem")
    assert s.llm_api_key == "sk-amem"
    assert s.embedder_api_key == "sk-openai"


def test_config_file_key_beats_openai_api_key(home: Path) -> None:
    write_config(home, 'embedder_api_key = "sk-file"\n')
    s = resolve(home, OPENAI_API_KEY="sk-openai")
    assert s.embedder_api_key == "sk-file"
    assert s.llm_api_key == "sk-openai"


def test_explicit_empty_key_is_not_replaced(home: Path) -> None:
    s = resolve(home, {"llm_api_key": ""}, OPENAI_API_KEY="sk-openai")
    assert s.llm_api_key == ""


def test_empty_openai_api_key_is_ignored(home: Path) -> None:
    assert resolve(home, OPENAI_API_KEY="").llm_api_key == ""


# -- validated values ------------------------------------------------------------------------------


def test_bad_pipeline_from_env(home: Path) -> None:
    with pytest.raises(ConfigError, match="pipeline"):
        resolve(home, AMEM_PIPELINE="fast")


def test_bad_pipeline_from_file(home: Path) -> None:
    write_config(home, 'pipeline = "reference"\n')
    with pytest.raises(ConfigError, match="pipeline"):
        resolve(home)


def test_bad_pipeline_override(home: Path) -> None:
    with pytest.raises(ConfigError, match="pipeline"):
        resolve(home, {"pipeline": "AMEM"})


def test_bad_retrieval(home: Path) -> None:
    with pytest.raises(ConfigError, match="retrieval"):
        resolve(home, AMEM_RETRIEVAL="dense")


def test_paper_values_accepted(home: Path) -> None:
    s = resolve(home, AMEM_PIPELINE="paper", AMEM_RETRIEVAL="paper")
    assert (s.pipeline, s.retrieval) == ("paper", "paper")


# -- nothing at import time ------------------------------------------------------------------------


def _env_with_home(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEM_") and k != "OPENAI_API_KEY"}
    env["AMEM_HOME"] = str(home)
    return env


def test_import_does_not_read_a_broken_config(home: Path) -> None:
    write_config(home, "this is [not toml\n")
    code = (
        "import amem, amem.cli, amem.memory, amem.config, amem.ingest, amem.transfer\n"
        "try:\n"
        "    amem.Settings.resolve()\n"
        "except amem.ConfigError as exc:\n"
        "    print('resolve-failed:', exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_env_with_home(home), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "resolve-failed:" in proc.stdout
    assert "config.toml" in proc.stdout


def test_cli_reports_a_broken_config_as_an_error(home: Path) -> None:
    write_config(home, 'llm = "fake"\nunknown_knob = 1\n')
    proc = subprocess.run(
        [sys.executable, "-m", "amem", "stats"],
        env=_env_with_home(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error:")
    assert "unknown_knob" in proc.stderr
    assert "Traceback" not in proc.stderr
